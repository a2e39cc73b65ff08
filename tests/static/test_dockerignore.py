"""The root .dockerignore: what the app images' builds send to the daemon, with BuildKit or without.

Matched as Docker matches (moby's patternmatcher): patterns relative to the
context root, `*` within a path segment, `**` across segments, a pattern that
matches a directory matches everything in it, and the last matching line wins.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import pytest

from tests.support import compose
from tests.support.dockerfile import APP_DOCKERFILES, origin

ROOT_IGNORE = compose.REPO / ".dockerignore"
# What never leaves the machine it was made on. Paths as they are in a checkout.
NEVER_SENT = [
    ".env",
    ".env.tmp",
    "secrets/mqtt-ca.key",
    "secrets/ca.pem",
    ".git/config",
    ".git/objects/ab/cdef",
    ".venv/bin/python",
    ".eventpipe/clickhouse/store/data.bin",
    ".eventpipe/mosquitto/data/mosquitto.db",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/0.6/x",
    "src/eventpipe/__pycache__/config.cpython-311.pyc",
    "src/.env",
    "src/eventpipe/secrets/token",
    "tests/conftest.py",
    "compose.yaml",
]
# Not part of the checkout: walking them would only be slow.
UNWALKED = {".git", ".venv", ".eventpipe", ".pytest_cache", ".mypy_cache", ".ruff_cache", "__pycache__"}


def _regex(pattern: str) -> re.Pattern[str]:
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out + "$")


@cache
def rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, regex) per pattern line, in order."""
    found = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        found.append((not exclusion, _regex(pattern)))
    return found


def sent(path: str, ignore: Path = ROOT_IGNORE) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for excludes, regex in rules(ignore):
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def copied_sources(dockerfile: Path) -> list[str]:
    """What a Dockerfile COPYs from the build context (not from another stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in re.findall(r"(?m)^(?:COPY|ADD)\s+(.+)$", text):
        words = line.split()
        if any(word.startswith("--from") for word in words):
            continue
        sources += [word for word in words[:-1] if not word.startswith("--")]
    return sources


def checkout_files() -> list[str]:
    files = []
    for directory, subdirs, names in os.walk(compose.REPO):
        subdirs[:] = [name for name in subdirs if name not in UNWALKED]
        files += [Path(directory, name).relative_to(compose.REPO).as_posix() for name in names]
    return files


def test_there_is_one_at_the_root() -> None:
    assert ROOT_IGNORE.is_file(), "without it, a build without BuildKit sends .env and .git to the daemon"


def test_the_matcher_matches_as_docker_does(tmp_path: Path) -> None:
    example = tmp_path / ".dockerignore"
    example.write_text("*\n!src/\n**/__pycache__\n/docs/*.md\n!docs/keep.md\n")
    assert not sent("compose.yaml", example)
    assert sent("src/eventpipe/config.py", example)
    assert not sent("src/eventpipe/__pycache__/config.pyc", example)
    assert not sent("__pycache__/x.pyc", example)
    assert not sent("docs/other.md", example) and sent("docs/keep.md", example)


@pytest.mark.parametrize("path", NEVER_SENT)
def test_secrets_and_local_state_stay_out(path: str) -> None:
    assert not sent(path), f"{path} would be sent to the Docker daemon by a build without BuildKit"


@pytest.mark.parametrize("dockerfile", APP_DOCKERFILES, ids=lambda p: p.relative_to(compose.REPO).as_posix())
def test_what_the_images_copy_is_sent(dockerfile: Path) -> None:
    sources = copied_sources(dockerfile)
    # Only an image built on another one built here may copy nothing (api/Dockerfile: tests/static/test_images.py).
    assert sources or origin(dockerfile) != dockerfile, f"{dockerfile} copies nothing from the context?"
    for source in sources:
        target = compose.REPO / source
        files = [p for p in target.rglob("*.py") if "__pycache__" not in p.parts] if target.is_dir() else [target]
        assert files, f"{source} is copied by {dockerfile} but missing"
        for file in files:
            assert sent(file.relative_to(compose.REPO).as_posix()), f"{file} is copied by {dockerfile} but ignored"


def test_no_ignore_file_beside_the_dockerfile_overrides_it() -> None:
    # BuildKit would read <Dockerfile>.dockerignore instead, and the two builders could send different files.
    assert not [path for path in checkout_files() if path.endswith(".dockerignore") and path != ".dockerignore"]
