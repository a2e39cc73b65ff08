"""Dockerfiles read as stages. The app images: ingest-worker/Dockerfile builds eventpipe once and its last
stage is the worker's image; api/Dockerfile is FROM that image, which its build is given as a named build
context, so it has no build stage of its own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from tests.support import compose

WORKER_DOCKERFILE = compose.REPO / "ingest-worker" / "Dockerfile"
API_DOCKERFILE = compose.REPO / "api" / "Dockerfile"
APP_DOCKERFILES = (WORKER_DOCKERFILE, API_DOCKERFILE)
# What a Dockerfile's FROM names that is no image to pull but a named build context, and the Dockerfile
# whose image fills it: compose.yaml and the pipeline hand it over (tests/static checks both).
NAMED_CONTEXTS: dict[Path, dict[str, Path]] = {API_DOCKERFILE: {"ingest-worker": WORKER_DOCKERFILE}}
# One image each: its last stage.
DOCKERFILES = sorted([*compose.REPO.glob("*/Dockerfile"), *compose.REPO.glob("*/*.Dockerfile")])


class Stage(NamedTuple):
    base: str
    name: str | None
    body: str


def stages(dockerfile: Path) -> list[Stage]:
    """Every stage, in order, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [
        Stage(match.group(1), match.group(2), match.group(3))
        for match in re.finditer(r"(?ms)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$(.*?)(?=^FROM\s|\Z)", text)
    ]


def image(dockerfile: Path, target: str | None = None) -> list[Stage]:
    """The stages an image is made of, its base's first: `target`, or the last stage, and the stages it is
    FROM, in this Dockerfile or, through a named build context, in the Dockerfile of the image given."""
    found = stages(dockerfile)
    by_name = {stage.name: stage for stage in found if stage.name}
    stage = by_name[target] if target else found[-1]
    chain = [stage]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    given = NAMED_CONTEXTS.get(dockerfile, {}).get(chain[0].base)
    return [*image(given), *chain] if given else chain


def instructions(dockerfile: Path, target: str | None = None) -> str:
    """The instructions that make an image, in order: a later USER or HEALTHCHECK wins, as in Docker."""
    return "".join(stage.body for stage in image(dockerfile, target))


def origin(dockerfile: Path) -> Path:
    """The Dockerfile an image starts in: the one whose image a named build context gives, else itself."""
    first = stages(dockerfile)[0].base
    given = NAMED_CONTEXTS.get(dockerfile, {}).get(first)
    return origin(given) if given else dockerfile


def image_id(path: Path) -> str:
    return path.relative_to(compose.REPO).as_posix()
