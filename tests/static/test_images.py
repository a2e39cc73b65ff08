"""Images: pinned everywhere, built small and unprivileged, with a healthcheck."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support import compose

# name:tag with at least major.minor in the tag (optionally v-prefixed), optionally @sha256.
PINNED = re.compile(r"^[a-z0-9][a-z0-9._/-]*:v?\d+\.\d+[A-Za-z0-9._-]*(@sha256:[0-9a-f]{64})?$")
DOCKERFILES = sorted([*compose.REPO.glob("*/Dockerfile"), *compose.REPO.glob("*/*.Dockerfile")])
APP_DOCKERFILES = [compose.REPO / "ingest-worker" / "Dockerfile", compose.REPO / "api" / "Dockerfile"]


def stages(dockerfile: Path) -> list[tuple[str, str | None, str]]:
    """(base image, stage name, body) of each stage."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for match in re.finditer(r"(?ms)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$(.*?)(?=^FROM\s|\Z)", text):
        found.append((match.group(1), match.group(2), match.group(3)))
    return found


def test_the_dockerfiles_are_found() -> None:
    names = {path.relative_to(compose.REPO).as_posix() for path in DOCKERFILES}
    assert {"ingest-worker/Dockerfile", "api/Dockerfile", "mosquitto/exporter.Dockerfile"} <= names


@pytest.mark.parametrize("name", sorted(compose.compose()["services"]))
def test_compose_images_are_pinned(name: str) -> None:
    definition = compose.service(name)
    if "build" in definition:
        # Built here from pinned bases; the tag is the deployment's choice (the commit in the pipeline).
        assert definition["image"].endswith(":${IMAGE_TAG:-dev}"), name
        return
    assert PINNED.match(definition["image"]), f"{name}: {definition['image']} is not pinned to a version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(compose.REPO).as_posix())
def test_dockerfile_bases_are_pinned(dockerfile: Path) -> None:
    names: set[str] = set()
    for base, stage, _ in stages(dockerfile):
        assert base in names or PINNED.match(base), f"{dockerfile}: FROM {base} is not pinned"
        if stage:
            names.add(stage)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(compose.REPO).as_posix())
def test_images_do_not_run_as_root(dockerfile: Path) -> None:
    _, _, final = stages(dockerfile)[-1]
    users = re.findall(r"(?m)^USER\s+(\S+)", final)
    assert users, f"{dockerfile}: the final stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile}: USER {users[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(compose.REPO).as_posix())
def test_images_have_a_healthcheck_and_are_multi_stage(dockerfile: Path) -> None:
    found = stages(dockerfile)
    assert len(found) >= 2, f"{dockerfile}: build tools would ship in the image"
    assert re.search(r"(?m)^HEALTHCHECK\s+.*CMD", found[-1][2]), f"{dockerfile}: no HEALTHCHECK in the final stage"


@pytest.mark.parametrize("dockerfile", APP_DOCKERFILES, ids=lambda p: p.relative_to(compose.REPO).as_posix())
def test_app_images_install_the_project_without_extras(dockerfile: Path) -> None:
    # The embedded engine (chDB, pandas, pyarrow: hundreds of MB) is for `eventpipe up`, not for containers.
    installs = re.findall(r"(?m)pip install\s+(.+)$", dockerfile.read_text())
    assert installs, f"{dockerfile}: no pip install"
    for arguments in installs:
        assert "[" not in arguments and "chdb" not in arguments, f"{dockerfile}: pip install {arguments}"


@pytest.mark.parametrize("dockerfile", APP_DOCKERFILES, ids=lambda p: p.relative_to(compose.REPO).as_posix())
def test_app_images_send_only_what_they_need_to_the_build(dockerfile: Path) -> None:
    # The build context is the repository root, with a 1 GB .venv in a developer's checkout.
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text()
    assert re.search(r"(?m)^\*$", ignore), "ignore everything, then allow what the image needs"
    for source in re.findall(r"(?m)^COPY\s+(?!--from)(.+)\s+\S+$", dockerfile.read_text()):
        for path in source.split():
            assert f"!{path.rstrip('/')}" in ignore.replace("/\n", "\n"), f"{dockerfile}: COPY {path} is ignored"
            assert (compose.REPO / path).exists(), f"{dockerfile}: COPY {path}: not in the repository"


def test_pipeline_images_are_pinned() -> None:
    pipeline = yaml.safe_load((compose.REPO / ".gitlab-ci.yml").read_text())
    images = []
    for job in pipeline.values():
        if not isinstance(job, dict):
            continue
        if "image" in job:
            images.append(job["image"] if isinstance(job["image"], str) else job["image"]["name"])
        for service in job.get("services", []):
            images.append(service if isinstance(service, str) else service["name"])
    assert images
    for image in images:
        assert PINNED.match(image), f".gitlab-ci.yml: {image} is not pinned to a version"
