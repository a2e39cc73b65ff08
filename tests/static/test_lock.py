"""The dependency locks: the images and CI install every package from requirements/*.txt, by version and
hash, and those files hold everything pyproject.toml asks for, for the Pythons CI and the images run.

scripts/lock.sh rewrites the locks; README.md says when to run it.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import compose
from tests.support.dockerfile import DOCKERFILES, WORKER_DOCKERFILE

REPO = compose.REPO
LOCKS = REPO / "requirements"
DEV, RUNTIME, BUILD = LOCKS / "dev.txt", LOCKS / "runtime.txt", LOCKS / "build.txt"
LOCK_SCRIPT = REPO / "scripts" / "lock.sh"
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
# The one Dockerfile that installs: api/Dockerfile is FROM its image (tests/static/test_images.py).
APP_DOCKERFILES = [WORKER_DOCKERFILE]
CI_FILES = [REPO / ".ci" / "run", REPO / ".gitlab-ci.yml"]
# Where the locks are used: .ci/run on this machine's Python, the GitLab jobs and the images on 3.12.
PYTHONS = {"3.11": "3.11.7", "3.12": "3.12.11"}
INSTALL = re.compile(r"\bpip3?\s+(install|wheel)\b(.*)")
# pip options that take a value, so that the value is not taken for something to install.
VALUED = {"-w", "--wheel-dir", "--python", "--target", "--prefix", "--root", "--cache-dir", "--progress-bar"}

Pins = dict[str, list[tuple[Version, Marker | None, int]]]


@cache
def pins(lock: Path) -> Pins:
    """name -> (version, marker, number of hashes) of each entry: one per Python range where versions differ."""
    found: Pins = {}
    for entry in re.sub(r"\\\n", " ", lock.read_text()).splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        requirement_text, *hashes = entry.split(" --hash=")
        requirement = Requirement(requirement_text)
        specifiers = list(requirement.specifier)
        pinned = len(specifiers) == 1 and specifiers[0].operator == "=="
        assert pinned, f"{lock.name}: {requirement_text.strip()} is not pinned to one version"
        found.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(specifiers[0].version), requirement.marker, len(hashes))
        )
    return found


def environment(python: str) -> dict[str, str]:
    version = PYTHONS[python]
    return {"python_version": python, "python_full_version": version, "sys_platform": "linux"}


def uncovered(requirement: Requirement, lock: Pins, python: str) -> str | None:
    """Why `lock` does not install `requirement` on `python` (Linux), or None when it does."""
    if requirement.marker and not requirement.marker.evaluate(environment(python)):
        return None
    name = canonicalize_name(requirement.name)
    here = environment(python)
    chosen = [version for version, marker, _ in lock.get(name, []) if not marker or marker.evaluate(here)]
    if not chosen:
        return f"{requirement} is not locked for Python {python}: run scripts/lock.sh"
    if len(chosen) > 1:
        return f"{name} is locked twice for Python {python}: {chosen}"
    if not requirement.specifier.contains(chosen[0], prereleases=True):
        return f"{requirement} is locked at {chosen[0]}: run scripts/lock.sh"
    return None


def project_requirements() -> dict[Path, list[Requirement]]:
    """What each lock must hold: the runtime dependencies, every extra, and what the build needs."""
    runtime = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    extras = [Requirement(text) for group in PYPROJECT["project"]["optional-dependencies"].values() for text in group]
    build = [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    return {RUNTIME: runtime, DEV: runtime + extras, BUILD: build}


def refusal(command: str) -> str | None:
    """Why a pip install (or pip wheel) takes a package from outside the locks, or None when it does not.

    Allowed: `--require-hashes -r requirements/X.txt` with nothing else to install, or eventpipe itself
    (`.` or its built wheel) with --no-deps, built with --no-build-isolation (an isolated build
    environment fetches the newest build backend).
    """
    match = INSTALL.search(command)
    assert match, command
    words = iter(shlex.split(match.group(2)))
    locks: list[str] = []
    targets: list[str] = []
    flags: set[str] = set()
    for word in words:
        if word in ("-c", "--constraint"):
            return f"a constraints file ({next(words, '')}) leaves what it does not name unlocked: use -r, hashed"
        if word in ("-r", "--requirement"):
            locks.append(next(words, ""))
        elif word in ("-e", "--editable"):
            targets.append(next(words, ""))
        elif word in VALUED:
            next(words, "")
        elif word.startswith("-"):
            flags.add(word)
        else:
            targets.append(word)
    if locks:
        if "--require-hashes" not in flags:
            return "installs from a lock without --require-hashes, so an unhashed file would be taken"
        if targets:
            return f"installs {targets} beside the lock, at whatever version resolves"
        for lock in locks:
            if Path(lock).parent.as_posix() != "requirements" or not (REPO / lock).is_file():
                return f"{lock} is not one of the locks under requirements/"
        return None
    if not targets:
        return "installs nothing from a lock"
    for target in targets:
        if target == ".":
            if "--no-build-isolation" not in flags:
                return "builds eventpipe in an isolated environment, with the newest build backend"
        elif not re.fullmatch(r"\S*/eventpipe-[^/]*\.whl", target):
            return f"installs {target}, which is not in a lock"
    if "--no-deps" not in flags:
        return f"installs {targets} with their dependencies, at whatever versions resolve"
    return None


def shell_lines(path: Path) -> list[str]:
    """The shell commands of a Dockerfile's RUN lines, of a script, or of every job of the GitLab pipeline."""
    if path.name == ".gitlab-ci.yml":
        pipeline = yaml.safe_load(path.read_text())
        text = "\n".join(
            line
            for job in pipeline.values()
            if isinstance(job, dict)
            for key in ("before_script", "script", "after_script")
            for line in job.get(key, [])
        )
    else:
        text = path.read_text()
    text = re.sub(r"\\\n", " ", text)
    commands = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        commands += [part.strip() for part in re.split(r"&&|\|\||;", line) if part.strip()]
    return commands


def installs(path: Path) -> list[str]:
    return [command for command in shell_lines(path) if INSTALL.search(command)]


def locks_installed(path: Path) -> set[str]:
    found = set()
    for command in installs(path):
        found |= set(re.findall(r"(?:-r|--requirement)[ =](\S+)", command))
    return found


EVERY_INSTALL = [
    pytest.param(path, command, id=f"{path.relative_to(REPO).as_posix()}: {command}")
    for path in [*DOCKERFILES, *CI_FILES]
    for command in installs(path)
]


@pytest.mark.parametrize(("path", "command"), EVERY_INSTALL)
def test_every_install_in_the_images_and_ci_takes_the_locks(path: Path, command: str) -> None:
    assert refusal(command) is None, f"{path.relative_to(REPO)}: {command}: {refusal(command)}"


@pytest.mark.parametrize("path", [*APP_DOCKERFILES, *CI_FILES], ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_installs_are_found(path: Path) -> None:
    # Otherwise the test above passes by finding nothing.
    assert installs(path), f"{path.relative_to(REPO)}: no pip install found"


@pytest.mark.parametrize(
    "command",
    [
        # What the images and CI ran before the locks.
        "/opt/venv/bin/pip install .",
        ".venv/bin/python -m pip install -q --upgrade pip",
        ".venv/bin/python -m pip install -q -e '.[dev]'",
        ".venv/bin/pip install -q -e '.[dev]'",
        # Near misses.
        "pip install -q -r requirements/dev.txt",
        "pip install --require-hashes -r requirements/dev.txt fastapi",
        "pip install --require-hashes -r constraints.txt",
        "pip install -c requirements/dev.txt -e .",
        "pip install --no-deps -e .",
        "pip install --no-build-isolation -e .",
        "pip wheel --no-deps -w /tmp/dist .",
        "pip install --no-deps --no-build-isolation . uvicorn",
        "uv pip install fastapi",
    ],
)
def test_an_install_outside_the_locks_is_refused(command: str) -> None:
    assert refusal(command), command


@pytest.mark.parametrize(
    "command",
    [
        "pip install --require-hashes -r requirements/build.txt",
        "python -m pip install -q --require-hashes -r requirements/build.txt -r requirements/dev.txt",
        "pip install -q --no-deps --no-build-isolation -e .",
        "pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist .",
        "/opt/venv/bin/pip install --no-deps --no-index /tmp/dist/eventpipe-*.whl",
    ],
)
def test_an_install_from_the_locks_is_accepted(command: str) -> None:
    assert refusal(command) is None, refusal(command)


def test_ci_installs_the_dev_lock_and_the_images_the_runtime_lock() -> None:
    for path in CI_FILES:
        assert locks_installed(path) == {"requirements/build.txt", "requirements/dev.txt"}, path
    for path in APP_DOCKERFILES:
        assert locks_installed(path) == {"requirements/build.txt", "requirements/runtime.txt"}, path


@pytest.mark.parametrize("lock", [RUNTIME, BUILD], ids=lambda p: p.name)
def test_the_images_get_the_versions_ci_tested(lock: Path) -> None:
    # runtime.txt and build.txt are resolved within dev.txt's pins, which CI installs and tests.
    dev = pins(DEV)
    for name, entries in pins(lock).items():
        if lock == RUNTIME:
            assert name in dev, f"{name} is in runtime.txt but CI never installs it"
        if name in dev:
            versions = {version for version, _, _ in entries}
            assert versions <= {version for version, _, _ in dev[name]}, f"{name}: {versions} in {lock.name}"


def test_the_images_lock_has_no_embedded_engine() -> None:
    # chDB with pandas and pyarrow is hundreds of MB, for `eventpipe up`; the containers use a server.
    assert not {"chdb", "pandas", "pyarrow"} & set(pins(RUNTIME))


@pytest.mark.parametrize("lock", [DEV, RUNTIME, BUILD], ids=lambda p: p.name)
def test_every_pin_has_hashes(lock: Path) -> None:
    assert pins(lock), f"{lock.name} is empty"
    for name, entries in pins(lock).items():
        assert all(hashes for _, _, hashes in entries), f"{lock.name}: {name} has no --hash"


@pytest.mark.parametrize("python", sorted(PYTHONS))
@pytest.mark.parametrize("lock", [DEV, RUNTIME, BUILD], ids=lambda p: p.name)
def test_the_locks_hold_everything_pyproject_asks_for(lock: Path, python: str) -> None:
    problems = [uncovered(requirement, pins(lock), python) for requirement in project_requirements()[lock]]
    assert not any(problems), f"{lock.name}: {[problem for problem in problems if problem]}"


def test_a_dependency_added_or_raised_without_relocking_is_caught() -> None:
    dev = pins(DEV)
    assert uncovered(Requirement("eventpipe-example-plugin>=1"), dev, "3.11")
    assert uncovered(Requirement("fastapi>=999"), dev, "3.12")
    # numpy is locked at one version per Python range: each Python gets exactly one.
    assert uncovered(Requirement("numpy"), dev, "3.11") is None
    assert uncovered(Requirement("numpy"), dev, "3.12") is None


def test_the_lock_script_writes_every_lock_installed_and_the_readme_names_it() -> None:
    written = set(re.findall(r"-o (requirements/\S+\.txt)", LOCK_SCRIPT.read_text()))
    used = set().union(*(locks_installed(path) for path in [*APP_DOCKERFILES, *CI_FILES]))
    assert used <= written, f"installed but not written by scripts/lock.sh: {sorted(used - written)}"
    assert LOCK_SCRIPT.stat().st_mode & 0o111, "scripts/lock.sh is not executable"
    tests_section = re.search(r"(?ms)^## Tests\n(.*?)(?=^## |\Z)", (REPO / "README.md").read_text())
    assert tests_section and "scripts/lock.sh" in tests_section.group(1)
