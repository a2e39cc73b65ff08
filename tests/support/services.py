"""Real services for tests: Mosquitto (a container when Docker answers, else the local binary) and chDB.

Never a silent skip: when neither Docker nor `mosquitto` is available the
fixture fails and says what to install.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eventpipe.broker.mosquitto import Mosquitto, find_binary, render_config
from tests.support.wait import free_port, wait_until

MOSQUITTO_IMAGE = "eclipse-mosquitto:2.0.20"
# The broker's in-flight window; a worker under test must use the same (see settings_for).
RECEIVE_MAXIMUM = 1_000


def docker_reachable() -> bool:
    if os.environ.get("EVENTPIPE_TEST_DOCKER", "auto") == "never":
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no usable Docker here
        return False


class LocalBroker:
    """A mosquitto process on a free port, stopped by PID; restartable on the same files."""

    def __init__(self, directory: Path, receive_maximum: int = RECEIVE_MAXIMUM) -> None:
        self.process = Mosquitto(free_port(), directory, receive_maximum)

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()


class ContainerBroker:
    """eclipse-mosquitto with the same generated config, through testcontainers."""

    def __init__(self, directory: Path, receive_maximum: int = RECEIVE_MAXIMUM) -> None:
        from testcontainers.core.container import DockerContainer

        directory.mkdir(parents=True, exist_ok=True)
        config = render_config(1883, Path("/mosquitto"), receive_maximum, host="0.0.0.0", user="", log_dest="stdout")
        (directory / "mosquitto.conf").write_text(config)
        self.container = (
            DockerContainer(MOSQUITTO_IMAGE)
            .with_exposed_ports(1883)
            .with_volume_mapping(str(directory / "mosquitto.conf"), "/mosquitto/config/mosquitto.conf", "ro")
        )

    @property
    def url(self) -> str:
        return f"mqtt://{self.container.get_container_host_ip()}:{self.container.get_exposed_port(1883)}"

    def start(self) -> None:
        self.container.start()

    def stop(self) -> None:
        self.container.stop()

    def restart(self) -> None:
        self.container.get_wrapped_container().restart()


@contextmanager
def running_broker(directory: Path, receive_maximum: int = RECEIVE_MAXIMUM) -> Iterator[LocalBroker | ContainerBroker]:
    if docker_reachable():
        broker: LocalBroker | ContainerBroker = ContainerBroker(directory, receive_maximum)
    elif find_binary():
        broker = LocalBroker(directory, receive_maximum)
    else:
        pytest.fail(
            "no MQTT broker for the tests: start Docker (testcontainers runs eclipse-mosquitto) "
            "or install Mosquitto (Debian/Ubuntu: apt-get install mosquitto)"
        )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def chdb_database_dsn(root: Path) -> str:
    """A fresh database in the process's one chDB engine: isolation without a second engine path."""
    import clickhouse_connect

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = clickhouse_connect.get_client(dsn=f"chdb://{root}")
    admin.command(f"CREATE DATABASE {name}")
    admin.close()
    return f"chdb://{root}?database={name}"


__all__ = ["chdb_database_dsn", "free_port", "running_broker", "wait_until"]
