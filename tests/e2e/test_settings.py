"""A setting that cannot work stops the command at once, exit 2, naming the variable to fix."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import run_eventpipe


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port: int = held.getsockname()[1]
        yield port


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("migrate", "EVENTPIPE_LOG_LEVEL", "verbose"),  # was a traceback from logging, exit 1
        ("api", "EVENTPIPE_API_PORT", "taken"),  # said "pick another --api-port", a flag `api` lacks
        ("worker", "EVENTPIPE_METRICS_PORT", "taken"),  # and "--metrics-port", which `worker` lacks
    ],
)
def test_a_setting_that_cannot_work_is_named_by_its_variable(
    tmp_path: Path, taken_port: int, command: str, variable: str, value: str
) -> None:
    env = {
        **os.environ,
        "EVENTPIPE_DATA_DIR": str(tmp_path),
        "EVENTPIPE_API_KEYS": "k" * 32,
        "EVENTPIPE_MQTT_SESSION_SECRET": "s" * 40,
        "EVENTPIPE_MQTT_URL": "mqtt://127.0.0.1:1",  # never reached: the setting stops it first
        "EVENTPIPE_API_PORT": "0",
        "EVENTPIPE_METRICS_PORT": "0",
        variable: str(taken_port) if value == "taken" else value,
    }
    done = run_eventpipe(command, env=env, timeout=90)
    assert done.returncode == 2, done.stderr[-800:]
    assert variable in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]
