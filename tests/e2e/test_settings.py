"""A setting that cannot work stops the command at once, exit 2, naming the variable to fix."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventpipe.port import free_port
from tests.support.stack import run_eventpipe


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port: int = held.getsockname()[1]
        yield port


def service_env(data_dir: Path) -> dict[str, str]:
    """What `api`, `worker` and `migrate` need to get as far as their settings, on free ports."""
    return {
        **os.environ,
        "EVENTPIPE_DATA_DIR": str(data_dir),
        "EVENTPIPE_API_KEYS": "k" * 32,
        "EVENTPIPE_MQTT_SESSION_SECRET": "s" * 40,
        "EVENTPIPE_MQTT_URL": "mqtt://127.0.0.1:1",  # never reached: the setting stops it first
        "EVENTPIPE_API_PORT": "0",
        "EVENTPIPE_METRICS_PORT": "0",
    }


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("migrate", "EVENTPIPE_LOG_LEVEL", "verbose"),  # was a traceback from logging, exit 1
        ("api", "EVENTPIPE_API_PORT", "taken"),  # said "pick another --api-port", a flag `api` lacks
        ("worker", "EVENTPIPE_METRICS_PORT", "taken"),  # and "--metrics-port", which `worker` lacks
        ("api", "EVENTPIPE_METRICS_PORT", "taken"),  # its metrics listener, off the API's port
    ],
)
def test_a_setting_that_cannot_work_is_named_by_its_variable(
    tmp_path: Path, taken_port: int, command: str, variable: str, value: str
) -> None:
    env = {**service_env(tmp_path), variable: str(taken_port) if value == "taken" else value}
    done = run_eventpipe(command, env=env, timeout=90)
    assert done.returncode == 2, done.stderr[-800:]
    assert variable in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]
    # The flags are `up`'s: this command has none, and `eventpipe up` is not what was run.
    assert "-port" not in done.stderr and "eventpipe up" not in done.stderr, done.stderr[-800:]


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("api", "EVENTPIPE_API_HOST", "bad host"),  # a name that does not resolve
        ("api", "EVENTPIPE_API_HOST", "192.0.2.1"),  # an address not this host's (TEST-NET-1)
        ("worker", "EVENTPIPE_METRICS_HOST", "bad host"),
        ("api", "EVENTPIPE_METRICS_HOST", "bad host"),
    ],
)
def test_a_host_that_cannot_be_listened_on_is_named_not_the_port(
    tmp_path: Path, command: str, variable: str, value: str
) -> None:
    """It said "pick another port (EVENTPIPE_API_PORT...)", sending the operator to the wrong setting."""
    env = {**service_env(tmp_path), variable: value}
    done = run_eventpipe(command, env=env, timeout=90)
    assert done.returncode == 2, done.stderr[-800:]
    assert f"; set {variable} to a name or address of this host" in done.stderr, done.stderr[-800:]
    assert "_PORT" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        # From a flag, named by the flag: the variable it blamed was not set.
        (["--api-port", "99999"], {}, "argument --api-port: 99999 is no port"),  # argparse's, before any setting
        (["--mqtt-url", "mqtt://u:pa/ss@127.0.0.1:1"], {}, "mqtt_url (--mqtt-url)"),
        ([], {"EVENTPIPE_API_PORT": "99999"}, "api_port (EVENTPIPE_API_PORT)"),
        ([], {"EVENTPIPE_DATA_DIR": "/proc/eventpipe"}, "EVENTPIPE_DATA_DIR"),  # a traceback before
        ([], {"EVENTPIPE_MOSQUITTO_BINARY": "no-such-broker"}, "set EVENTPIPE_MOSQUITTO_BINARY to its path"),
        # No flag to blame: it named --metrics-port. Before any broker is asked, so none is started.
        (["--mqtt-url", "mqtt://127.0.0.1:1"], {"EVENTPIPE_METRICS_HOST": "bad host"}, "set EVENTPIPE_METRICS_HOST"),
    ],
)
def test_up_names_the_flag_or_variable_a_bad_value_came_from(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    data = ["--data-dir", str(tmp_path)] if "EVENTPIPE_DATA_DIR" not in env else []
    broker = [] if "--mqtt-url" in args else ["--mqtt-port", str(free_port())]  # 0 is no broker's port
    ports = ["--metrics-port", "0", "--prometheus-port", "0", *broker]
    done = run_eventpipe("up", *data, *ports, *args, env={**os.environ, **env}, timeout=90)
    assert done.returncode == 2, done.stderr[-800:]
    assert named in done.stderr and "Traceback" not in done.stderr, done.stderr[-800:]
    assert "pa/ss" not in done.stderr
