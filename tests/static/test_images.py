"""Images: pinned everywhere, built small and unprivileged, with a healthcheck."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.support import compose, dockerfile

# name:tag with at least major.minor in the tag (optionally v-prefixed), optionally @sha256.
PINNED = re.compile(r"^[a-z0-9][a-z0-9._/-]*:v?\d+\.\d+[A-Za-z0-9._-]*(@sha256:[0-9a-f]{64})?$")
DOCKERFILES = dockerfile.DOCKERFILES
IMAGES = dockerfile.images()


def test_the_dockerfiles_are_found() -> None:
    names = {path.relative_to(compose.REPO).as_posix() for path in DOCKERFILES}
    assert {"Dockerfile", "mosquitto/exporter.Dockerfile"} <= names
    targets = {stage.name for stage in dockerfile.stages(dockerfile.APP_DOCKERFILE)}
    assert set(dockerfile.APP_TARGETS) <= targets


def test_the_app_images_share_one_build_stage() -> None:
    # One recipe for the virtualenv: the two images cannot drift apart in what they install.
    builds = [
        stage.name
        for stage in dockerfile.stages(dockerfile.APP_DOCKERFILE)
        if "pip install" in stage.body or "pip wheel" in stage.body
    ]
    assert builds == ["build"]
    for target in dockerfile.APP_TARGETS:
        chain = dockerfile.image(dockerfile.APP_DOCKERFILE, target)
        assert "COPY --from=build /opt/venv" in "".join(stage.body for stage in chain), target
        assert "pip install" not in "".join(stage.body for stage in chain), f"{target} builds its own virtualenv"


@pytest.mark.parametrize("name", sorted(compose.compose()["services"]))
def test_compose_images_are_pinned(name: str) -> None:
    definition = compose.service(name)
    if "build" in definition:
        # Built here from pinned bases; the tag is the deployment's choice (the commit in the pipeline).
        assert definition["image"].endswith(":${IMAGE_TAG:-dev}"), name
        return
    assert PINNED.match(definition["image"]), f"{name}: {definition['image']} is not pinned to a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(compose.REPO).as_posix())
def test_dockerfile_bases_are_pinned(path: Path) -> None:
    names: set[str] = set()
    for base, stage, _ in dockerfile.stages(path):
        assert base in names or PINNED.match(base), f"{path}: FROM {base} is not pinned"
        if stage:
            names.add(stage)


@pytest.mark.parametrize("built", IMAGES, ids=dockerfile.image_id)
def test_images_do_not_run_as_root(built: tuple[Path, str | None]) -> None:
    users = re.findall(r"(?m)^USER\s+(\S+)", dockerfile.instructions(*built))
    assert users, f"{dockerfile.image_id(built)}: no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile.image_id(built)}: USER {users[-1]}"


@pytest.mark.parametrize("built", IMAGES, ids=dockerfile.image_id)
def test_images_have_a_healthcheck_and_are_multi_stage(built: tuple[Path, str | None]) -> None:
    path, target = built
    assert len(dockerfile.stages(path)) >= 2, f"{path}: build tools would ship in the image"
    last = dockerfile.image(path, target)[-1]
    assert re.search(r"(?m)^HEALTHCHECK\s+.*CMD", last.body), f"{dockerfile.image_id(built)}: no HEALTHCHECK of its own"


def test_app_images_install_the_project_without_extras() -> None:
    # The embedded engine (chDB, pandas, pyarrow: hundreds of MB) is for `eventpipe up`, not for containers.
    installs = re.findall(r"(?m)pip install\s+(.+)$", dockerfile.APP_DOCKERFILE.read_text())
    assert installs, "Dockerfile: no pip install"
    for arguments in installs:
        assert "[" not in arguments and "chdb" not in arguments, f"Dockerfile: pip install {arguments}"


def test_app_images_send_only_what_they_need_to_the_build() -> None:
    # The build context is the repository root, with a 1 GB .venv in a developer's checkout; BuildKit
    # and the legacy builder both read the root .dockerignore when no Dockerfile.dockerignore is beside it.
    assert not compose.REPO.joinpath("Dockerfile.dockerignore").exists()
    ignore = (compose.REPO / ".dockerignore").read_text()
    assert re.search(r"(?m)^\*$", ignore), "ignore everything, then allow what the image needs"
    for source in re.findall(r"(?m)^COPY\s+(?!--from)(.+)\s+\S+$", dockerfile.APP_DOCKERFILE.read_text()):
        for path in source.split():
            assert f"!{path.rstrip('/')}" in ignore.replace("/\n", "\n"), f"Dockerfile: COPY {path} is ignored"
            assert (compose.REPO / path).exists(), f"Dockerfile: COPY {path}: not in the repository"


@pytest.mark.parametrize("target", dockerfile.APP_TARGETS)
def test_app_images_check_their_health_with_the_package(target: str) -> None:
    # No script beside the package: the healthcheck is `eventpipe healthcheck`, covered by mypy and tests.
    last = dockerfile.image(dockerfile.APP_DOCKERFILE, target)[-1]
    service = "worker" if target == "ingest-worker" else "api"
    assert f'CMD ["eventpipe", "healthcheck", "{service}"]' in last.body


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
