"""Dockerfiles read as stages: the app images are two targets of the root Dockerfile, sharing its build stage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from tests.support import compose

APP_DOCKERFILE = compose.REPO / "Dockerfile"
APP_TARGETS = ("ingest-worker", "api")
DOCKERFILES = sorted([APP_DOCKERFILE, *compose.REPO.glob("*/Dockerfile"), *compose.REPO.glob("*/*.Dockerfile")])


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
    """The stages an image is made of, its base's first: `target`, or the last stage, and the stages it is FROM."""
    found = stages(dockerfile)
    by_name = {stage.name: stage for stage in found if stage.name}
    stage = by_name[target] if target else found[-1]
    chain = [stage]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def instructions(dockerfile: Path, target: str | None = None) -> str:
    """The instructions that make an image, in order: a later USER or HEALTHCHECK wins, as in Docker."""
    return "".join(stage.body for stage in image(dockerfile, target))


def images() -> list[tuple[Path, str | None]]:
    """(Dockerfile, target) of every image built here."""
    others = [(path, None) for path in DOCKERFILES if path != APP_DOCKERFILE]
    return [*((APP_DOCKERFILE, target) for target in APP_TARGETS), *others]


def image_id(item: tuple[Path, str | None]) -> str:
    path, target = item
    return path.relative_to(compose.REPO).as_posix() + (f":{target}" if target else "")
