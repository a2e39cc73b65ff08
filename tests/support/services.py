"""Real services for tests: Mosquitto and ClickHouse as containers when Docker answers, else the local
`mosquitto` binary and chDB.

The containers are the compose.yaml services themselves: same image,
entrypoint, environment, config files and healthcheck, with random passwords
for the session (tests/support/compose.py reads the file).

Never a silent skip: when neither Docker nor `mosquitto` is available the
fixture fails and says what to install, and EVENTPIPE_TEST_REQUIRE_DOCKER=1
(the GitLab pipeline sets it) turns an unreachable Docker into a failure
instead of the local fallback.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from eventpipe.config import Settings
from eventpipe.mqtt import packet
from eventpipe.port import free_port
from eventpipe.process import pid_running, rss_bytes
from eventpipe.stack.certificate import local_authority
from eventpipe.stack.mosquitto import Mosquitto, find_binary
from tests.support import compose
from tests.support.wait import wait_until

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

# The broker's in-flight window; a worker under test must use the same (see settings_for).
RECEIVE_MAXIMUM = 1_000
# The payload limit the broker's packet limit is derived from: the worker's default.
MAX_PAYLOAD_BYTES = Settings.model_fields["max_payload_bytes"].default
# The worker's session expiry, which the broker's own session expiry follows.
SESSION_EXPIRY_S = Settings.model_fields["mqtt_session_expiry_s"].default


REQUIRE_DOCKER = "EVENTPIPE_TEST_REQUIRE_DOCKER"
# A user of the test broker only: the tests publish and consume with one URL,
# which the production ACL (producers write, the worker reads) rightly forbids.
TEST_MQTT_USER = "eventpipe-test"
TEST_ACL = f"""
# Tests only: one user that both publishes and receives events.
user {TEST_MQTT_USER}
topic readwrite events/#
"""


def docker_reachable() -> bool:
    if os.environ.get("EVENTPIPE_TEST_DOCKER", "auto") == "never":
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no usable Docker here
        return False


def docker_required() -> bool:
    return os.environ.get(REQUIRE_DOCKER) == "1"


@cache
def docker_available() -> bool:
    """Whether the container path runs; when Docker is required, waits up to a minute for it (a dind service)."""
    deadline = time.monotonic() + (60 if docker_required() else 0)
    while not docker_reachable():
        if time.monotonic() >= deadline:
            return False
        time.sleep(2)
    return True


def missing_docker_message() -> str:
    return (
        f"{REQUIRE_DOCKER}=1 but Docker does not answer (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}, "
        f"EVENTPIPE_TEST_DOCKER={os.environ.get('EVENTPIPE_TEST_DOCKER', 'auto')}): the integration and fault "
        "suites must run against the containers here"
    )


def use_docker() -> bool:
    if docker_available():
        return True
    if docker_required():
        pytest.fail(missing_docker_message(), pytrace=False)
    return False


@cache
def session_secrets() -> dict[str, str]:
    """A random value for every secret compose.yaml requires, the same for the whole session."""
    names = set(compose.required_variables()) | {f"MQTT_{TEST_MQTT_USER.upper().replace('-', '_')}_PASSWORD"}
    return {name: secrets.token_hex(16) for name in sorted(names)}


def service_container(name: str, env: Mapping[str, str], replace: Mapping[str, bytes] | None = None) -> DockerContainer:
    """The compose service `name` as a test container: image, entrypoint, command, environment, the
    config files it mounts (copied in, so that a remote daemon such as dind gets them too; `replace`
    swaps a file's content by its path in the container), ulimits, and its healthcheck, polled every
    second, which the container must pass before start() returns."""
    from docker.types import Ulimit
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import HealthcheckWaitStrategy

    definition = compose.service(name)
    container = DockerContainer(definition["image"])
    for key, value in compose.environment(name, env).items():
        container.with_env(key, value)
    for source, target in compose.bind_mounts(name):
        content = (replace or {}).get(target)
        container.with_copy_into_container(content if content is not None else source.read_bytes(), target)
    if "command" in definition:
        container.with_command(definition["command"])
    options: dict[str, Any] = {}
    if "entrypoint" in definition:
        options["entrypoint"] = definition["entrypoint"]
    if "ulimits" in definition:
        options["ulimits"] = [Ulimit(name=k, soft=v["soft"], hard=v["hard"]) for k, v in definition["ulimits"].items()]
    test = [compose.interpolate(part, env) for part in definition["healthcheck"]["test"]]
    second = 1_000_000_000
    options["healthcheck"] = {"test": test, "interval": second, "timeout": 10 * second, "retries": 60}
    container.with_kwargs(**options)
    return container.waiting_for(HealthcheckWaitStrategy().with_startup_timeout(180).with_poll_interval(0.5))


class LocalBroker:
    """A mosquitto process on a free port, stopped by PID; restartable on the same files."""

    def __init__(
        self, directory: Path, receive_maximum: int = RECEIVE_MAXIMUM, max_payload_bytes: int = MAX_PAYLOAD_BYTES
    ) -> None:
        self.process = Mosquitto(
            free_port(),
            directory,
            receive_maximum,
            max_payload_bytes=max_payload_bytes,
            session_expiry_s=SESSION_EXPIRY_S,
        )

    @property
    def url(self) -> str:
        return self.process.url

    def log(self) -> bytes:
        return self.process.log_file.read_bytes()

    def memory(self) -> int:
        """The broker's resident memory in bytes."""
        pid = pid_running("-c", str(self.process.directory / "mosquitto.conf"))
        assert pid is not None, "the broker is not running"
        return rss_bytes(pid)

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()


class ContainerBroker:
    """The compose `mosquitto` service (eclipse-mosquitto, entrypoint, config, ACL, passwords, healthcheck),
    one per test so that no session or queue leaks between tests. Two test-only changes: the in-flight
    window is the test's, and the ACL has a user who may both publish and receive (`url`); a test may also
    derive the packet limit from another payload limit than compose's."""

    def __init__(
        self, directory: Path, receive_maximum: int = RECEIVE_MAXIMUM, max_payload_bytes: int | None = None
    ) -> None:
        # The broker's files live in the container, as in compose; `directory` only holds the TLS
        # listener's certificate, which compose's tls service would put in /mosquitto/certs.
        mounts = {target: source for source, target in compose.bind_mounts("mosquitto")}
        config = mounts["/mosquitto/config/mosquitto.conf"].read_text()
        window = f"max_inflight_messages {receive_maximum}"
        config, replaced = re.subn(r"(?m)^max_inflight_messages \d+$", window, config)
        assert replaced == 1, "mosquitto/mosquitto.conf has no max_inflight_messages line"
        if max_payload_bytes is not None:
            limit = f"max_packet_size {packet.broker_limit(max_payload_bytes)}"
            config, replaced = re.subn(r"(?m)^max_packet_size \d+$", limit, config)
            assert replaced == 1, "mosquitto/mosquitto.conf has no max_packet_size line"
        acl = mounts["/mosquitto/config/acl"].read_text() + TEST_ACL
        self.env = session_secrets()
        # A fixed host port, so that a restart keeps the URL the worker under test holds.
        self.port = free_port()
        self.container = service_container(
            "mosquitto",
            self.env,
            {"/mosquitto/config/mosquitto.conf": config.encode(), "/mosquitto/config/acl": acl.encode()},
        ).with_bind_ports(1883, self.port)
        test_password = f"MQTT_{TEST_MQTT_USER.upper().replace('-', '_')}_PASSWORD"
        self.container.with_env(test_password, self.env[test_password])
        tls = local_authority(directory / "tls")
        for source in (tls.cert, tls.key):
            # Readable by the user Mosquitto drops to: a throwaway key, for the tests only.
            self.container.with_copy_into_container(source.read_bytes(), f"/mosquitto/certs/{source.name}", 0o644)

    def url_for(self, user: str) -> str:
        """mqtt://user:password@host:port for a user of the ACL (producer, ingest, exporter, eventpipe-test)."""
        password = self.env[f"MQTT_{user.upper().replace('-', '_')}_PASSWORD"]
        return f"mqtt://{user}:{password}@{self.container.get_container_host_ip()}:{self.port}"

    @property
    def url(self) -> str:
        return self.url_for(TEST_MQTT_USER)

    def log(self) -> bytes:
        stdout, stderr = self.container.get_logs()
        return bytes(stdout) + bytes(stderr)

    def memory(self) -> int:
        """The container's memory use in bytes, as `docker stats` reports it."""
        stats = self.container.get_wrapped_container().stats(stream=False)
        return int(stats["memory_stats"]["usage"])

    def start(self) -> None:
        self.container.start()

    def stop(self) -> None:
        self.container.stop()

    def restart(self) -> None:
        """docker restart: SIGTERM (Mosquitto saves sessions and queues), start, wait until healthy again."""
        wrapped = self.container.get_wrapped_container()
        wrapped.restart(timeout=30)
        wait_until(lambda: _health(wrapped) == "healthy", timeout=60, interval=0.2, what="the broker healthy again")


def _health(wrapped: Any) -> str:
    wrapped.reload()
    return str(wrapped.attrs.get("State", {}).get("Health", {}).get("Status", ""))


class ClickHouseServer:
    """The compose `clickhouse` service (image, config.d, users.d, passwords, healthcheck) for the session,
    with the eventpipe database created as `eventpipe migrate` creates it. Tests reach it
    as the compose services do: dsn("migrate") is the migrator's DSN, dsn("ingest-worker") the insert-only
    user's, dsn("api") the read-only user's."""

    def __init__(self) -> None:
        self.env = session_secrets()
        self.container = service_container("clickhouse", self.env).with_exposed_ports(8123)
        self.resets = 0  # how often reset() emptied the database: a store shared by tests is stale after one

    def dsn(self, service: str = "migrate", variable: str = "EVENTPIPE_CLICKHOUSE_DSN") -> str:
        """The DSN in `variable` of the compose `service`, pointed at this container."""
        parts = urlsplit(compose.environment(service, self.env)[variable])
        host = self.container.get_container_host_ip()
        netloc = f"{parts.username}:{parts.password}@{host}:{self.container.get_exposed_port(8123)}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> None:
        self.container.start()
        from eventpipe.store.database import create_database

        create_database(self.dsn("migrate"))

    def reset(self) -> None:
        """Drop every table of the eventpipe database (as the migrator), so that each test starts unmigrated."""
        from eventpipe.store.client import connect

        self.resets += 1
        client = connect(self.dsn("migrate"))
        for (table,) in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows:
            client.command(f"DROP TABLE IF EXISTS `{table}` SYNC")
        client.close()

    def stop(self) -> None:
        self.container.stop()


def require_mosquitto() -> None:
    """For tests of the native broker itself, which no container stands in for: fail, saying what to
    install, rather than skip (a machine without Mosquitto would pass them unrun)."""
    if find_binary() is None:
        pytest.fail("these tests run the native broker: install Mosquitto (Debian/Ubuntu: apt-get install mosquitto)")


@contextmanager
def running_broker(
    directory: Path, receive_maximum: int = RECEIVE_MAXIMUM, max_payload_bytes: int | None = None
) -> Iterator[LocalBroker | ContainerBroker]:
    """`max_payload_bytes`: the payload limit the broker's packet limit is derived from, if not the worker's default."""
    if use_docker():
        broker: LocalBroker | ContainerBroker = ContainerBroker(directory, receive_maximum, max_payload_bytes)
    elif find_binary():
        broker = LocalBroker(directory, receive_maximum, max_payload_bytes or MAX_PAYLOAD_BYTES)
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


def empty_dsn(request: pytest.FixtureRequest, chdb_root: Path) -> str:
    """A ClickHouse with an empty database: the session's container (its tables dropped) when Docker
    answers, else a fresh database in the embedded engine."""
    if use_docker():
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        server.reset()
        return server.dsn("migrate")
    return chdb_database_dsn(chdb_root)


def chdb_database_dsn(root: Path) -> str:
    """A fresh database in the process's one chDB engine: isolation without a second engine path."""
    from eventpipe.store.client import connect

    name = f"t_{uuid.uuid4().hex[:12]}"
    # Through eventpipe's connect: whichever client opens the engine first gives it its startup
    # options (the backups disk among them), and this one is usually the first.
    admin = connect(f"chdb://{root}")
    admin.command(f"CREATE DATABASE {name}")
    admin.close()
    return f"chdb://{root}?database={name}"


def drop_database(root: Path, dsn: str) -> None:
    """Drop the embedded engine's database that chdb_database_dsn made for `dsn` (a server's is left alone).

    Without it the session's engine kept every test's tables: each has background tasks, and an idle
    engine holding 160 migrated databases took 15% of a core (6% at 20; 0.3% once they were dropped)."""
    from eventpipe.store.client import connect

    if not dsn.startswith("chdb://"):
        return
    name = dsn.rpartition("?database=")[2]
    assert name.startswith("t_") and name[2:].isalnum(), dsn  # one of chdb_database_dsn's
    admin = connect(f"chdb://{root}")
    # Not SYNC: the tables stop at once, and their files go later, without this test waiting on them.
    admin.command(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


__all__ = [
    "ClickHouseServer",
    "chdb_database_dsn",
    "drop_database",
    "empty_dsn",
    "free_port",
    "running_broker",
    "use_docker",
    "wait_until",
]
