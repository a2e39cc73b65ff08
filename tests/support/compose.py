"""compose.yaml as data: read by the static checks, and by the test containers that copy its services."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; `$$` is a literal `$`.
REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services[name]


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """What compose makes of `text` given `env`; a missing required variable raises KeyError."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2), match.group(3)
        value = env.get(name)
        empty_counts = operator is not None and operator.startswith(":")
        missing = value is None or (empty_counts and value == "")
        if operator and operator.endswith("?") and missing:
            raise KeyError(f"{name}: {argument}")
        if operator and operator.endswith("-") and missing:
            return argument
        return value or ""

    return REFERENCE.sub(replace, text)


def environment(name: str, env: Mapping[str, str]) -> dict[str, str]:
    """A service's `environment:` after interpolation."""
    raw = service(name).get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value), env) for key, value in raw.items()}


def volumes(name: str) -> list[tuple[str, str, list[str]]]:
    """(source, path in the container, options such as ["ro"]) for each volume of a service, in either syntax."""
    found = []
    for volume in service(name).get("volumes", []):
        if isinstance(volume, dict):  # the long syntax
            options = ["ro"] if volume.get("read_only") else []
            found.append((str(volume.get("source", "")), str(volume["target"]), options))
        else:
            source, target, *options = str(volume).split(":")
            found.append((source, target, options))
    return found


def bind_mounts(name: str) -> list[tuple[Path, str]]:
    """(file or directory in the repository, path in the container) for each ./ volume of a service."""
    return [(REPO / source, target) for source, target, _options in volumes(name) if source.startswith("./")]


def strings(node: object) -> Iterator[str]:
    """Every string value in a YAML tree (keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def references() -> list[tuple[str, str | None, str | None]]:
    """(name, operator, argument) of every variable reference in compose.yaml's values; operator is
    None for a bare reference, else one of ':-', '-', ':?', '?'."""
    found = []
    for text in strings(compose()):
        for match in REFERENCE.finditer(text):
            if match.group(0) != "$$":
                found.append((match.group(1) or match.group(4), match.group(2), match.group(3)))
    return found


def required_variables() -> list[str]:
    """Variables compose refuses to start without (${VAR:?...})."""
    return sorted({name for name, operator, _ in references() if operator in (":?", "?")})


# The compose broker's persistence: Mosquitto 2.1's SQLite plugin, where its image has it.
PERSIST_PLUGIN = "/usr/lib/mosquitto_persist_sqlite.so"
PERSIST_LINES = re.compile(rf"(?m)^global_plugin {re.escape(PERSIST_PLUGIN)}\n(?:plugin_opt_\w+ .*\n)*")
# Where a Mosquitto 2.1 on PATH has that plugin, for the tests to run the compose config as it is.
PLUGIN_VARIABLE = "EVENTPIPE_TEST_MOSQUITTO_PERSIST_PLUGIN"
SNAPSHOTS = "persistence true\nautosave_interval 10\n"


def persist_plugin() -> str | None:
    """Where the Mosquitto 2.1 the tests are given has its persist-sqlite plugin (PLUGIN_VARIABLE), or None:
    then the tests have Debian's 2.0, which has none."""
    return os.environ.get(PLUGIN_VARIABLE) or None


def native_persistence(config: str, plugin: str | None) -> str:
    """mosquitto/mosquitto.conf for a local Mosquitto: as it is, with the plugin at `plugin`; else (None)
    with the 2.0 way instead (a snapshot every 10 s, as `eventpipe up` writes it), for Debian's 2.0, which
    has no plugin, to run the rest of the config unchanged."""
    replacement = PERSIST_LINES.search(config)
    assert replacement is not None, "mosquitto/mosquitto.conf has no persist-sqlite plugin"
    found = replacement.group(0)
    return config.replace(found, found.replace(PERSIST_PLUGIN, plugin) if plugin else SNAPSHOTS)
