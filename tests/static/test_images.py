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
APP_DOCKERFILES = dockerfile.APP_DOCKERFILES


def test_the_dockerfiles_are_found() -> None:
    # Each app image's Dockerfile in its own folder (the project's fixed layout), none at the root,
    # where `docker build .` would take it.
    names = {dockerfile.image_id(path) for path in DOCKERFILES}
    assert {"ingest-worker/Dockerfile", "api/Dockerfile"} <= names
    assert not (compose.REPO / "Dockerfile").exists()


def test_the_image_folders_hold_no_code() -> None:
    # The code is the package's, under mypy and the unit tests: ingest-worker/ and api/ hold the images
    # (and api/ the keys file's example).
    for folder in ("ingest-worker", "api"):
        assert not list((compose.REPO / folder).rglob("*.py")), f"{folder}/ holds Python outside the package"


def test_the_app_images_share_one_build_stage() -> None:
    # One recipe for the virtualenv: the two images cannot drift apart in what they install.
    builds = [
        (dockerfile.image_id(path), stage.name)
        for path in APP_DOCKERFILES
        for stage in dockerfile.stages(path)
        if "pip install" in stage.body or "pip wheel" in stage.body
    ]
    assert builds == [("ingest-worker/Dockerfile", "build")]
    for path in APP_DOCKERFILES:
        chain = "".join(stage.body for stage in dockerfile.image(path))
        assert "COPY --from=build /opt/venv" in chain, dockerfile.image_id(path)
        assert "pip install" not in chain, f"{dockerfile.image_id(path)} builds its own virtualenv"


def test_the_api_image_is_the_worker_image_with_the_apis_settings_on_top() -> None:
    # No build stage of its own: nothing from the context, no install, one stage FROM the named build
    # context that compose.yaml and the pipeline fill with the worker image (test_compose, test_pipeline).
    (stage,) = dockerfile.stages(dockerfile.API_DOCKERFILE)
    assert dockerfile.NAMED_CONTEXTS[dockerfile.API_DOCKERFILE] == {stage.base: dockerfile.WORKER_DOCKERFILE}
    assert not re.search(r"(?m)^(COPY|ADD)\s", stage.body), "api/Dockerfile copies from the build context"
    assert not re.search(r"\bpip3?\s+(install|wheel)\b", stage.body), "api/Dockerfile installs packages"
    assert dockerfile.image(dockerfile.API_DOCKERFILE)[:-1] == dockerfile.image(dockerfile.WORKER_DOCKERFILE)


@pytest.mark.parametrize("name", sorted(compose.compose()["services"]))
def test_compose_images_are_pinned(name: str) -> None:
    definition = compose.service(name)
    if "build" in definition:
        # Built here from pinned bases; the tag is the deployment's choice (the commit in the pipeline).
        assert definition["image"].endswith(":${IMAGE_TAG:-dev}"), name
        return
    assert PINNED.match(definition["image"]), f"{name}: {definition['image']} is not pinned to a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile.image_id)
def test_dockerfile_bases_are_pinned(path: Path) -> None:
    # A named build context is an image built here, from pinned bases (checked in its own Dockerfile).
    names = set(dockerfile.NAMED_CONTEXTS.get(path, {}))
    for base, stage, _ in dockerfile.stages(path):
        assert base in names or PINNED.match(base), f"{path}: FROM {base} is not pinned"
        if stage:
            names.add(stage)


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile.image_id)
def test_images_do_not_run_as_root(path: Path) -> None:
    users = re.findall(r"(?m)^USER\s+(\S+)", dockerfile.instructions(path))
    assert users, f"{dockerfile.image_id(path)}: no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile.image_id(path)}: USER {users[-1]}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=dockerfile.image_id)
def test_images_have_a_healthcheck_and_are_multi_stage(path: Path) -> None:
    # The API's image starts as the worker's: its build tools stay in that Dockerfile's build stage.
    origin = dockerfile.origin(path)
    assert len(dockerfile.stages(origin)) >= 2, f"{origin}: build tools would ship in the image"
    last = dockerfile.image(path)[-1]
    assert re.search(r"(?m)^HEALTHCHECK\s+.*CMD", last.body), f"{dockerfile.image_id(path)}: no HEALTHCHECK of its own"


def test_app_images_install_the_project_without_extras() -> None:
    # The embedded engine (chDB, pandas, pyarrow: hundreds of MB) is for `eventpipe up`, not for containers.
    installs = [
        (dockerfile.image_id(path), arguments)
        for path in APP_DOCKERFILES
        for arguments in re.findall(r"(?m)pip install\s+(.+)$", path.read_text())
    ]
    assert installs, "app Dockerfiles: no pip install"
    for path, arguments in installs:
        assert "[" not in arguments and "chdb" not in arguments, f"{path}: pip install {arguments}"


@pytest.mark.parametrize("path", APP_DOCKERFILES, ids=dockerfile.image_id)
def test_app_images_send_only_what_they_need_to_the_build(path: Path) -> None:
    # The build context is the repository root, with a 1 GB .venv in a developer's checkout; BuildKit
    # and the legacy builder both read the root .dockerignore when no <Dockerfile>.dockerignore is beside it.
    assert not path.with_name(path.name + ".dockerignore").exists()
    ignore = (compose.REPO / ".dockerignore").read_text()
    assert re.search(r"(?m)^\*$", ignore), "ignore everything, then allow what the image needs"
    for source in re.findall(r"(?m)^COPY\s+(?!--from)(.+)\s+\S+$", path.read_text()):
        for copied in source.split():
            assert f"!{copied.rstrip('/')}" in ignore.replace("/\n", "\n"), f"{path}: COPY {copied} is ignored"
            assert (compose.REPO / copied).exists(), f"{path}: COPY {copied}: not in the repository"


@pytest.mark.parametrize(
    ("path", "service"),
    [(dockerfile.WORKER_DOCKERFILE, "worker"), (dockerfile.API_DOCKERFILE, "api")],
    ids=["worker", "api"],
)
def test_app_images_check_their_health_with_the_package(path: Path, service: str) -> None:
    # No script beside the package: the healthcheck is `eventpipe healthcheck`, covered by mypy and tests.
    last = dockerfile.image(path)[-1]
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
