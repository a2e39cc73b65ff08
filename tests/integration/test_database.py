"""`eventpipe migrate` creates the database its DSN names before the tables inside it, as the compose
`migrate` service needs on a new ClickHouse server. On a server (when Docker answers) the session's
ClickHouse container gets its database that way too (tests/support/services.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from eventpipe.errors import ConfigError, StorageError
from eventpipe.port import free_port
from eventpipe.store.client import connect
from eventpipe.store.database import create, named_database
from tests.support.stack import run_eventpipe


def test_a_server_dsn_names_its_database_and_the_embedded_engine_none() -> None:
    assert named_database("http://u:p@clickhouse:8123/eventpipe") == ("http://u:p@clickhouse:8123", "eventpipe")
    assert named_database("https://u:p@db.example.com:8443/events_2?secure=1") == (
        "https://u:p@db.example.com:8443?secure=1",
        "events_2",
    )
    assert named_database("http://u:p@clickhouse:8123") is None
    assert named_database("chdb:///var/lib/eventpipe/clickhouse") is None


@pytest.mark.parametrize("name", ["bad`name", "1st", "events-2", "db;DROP"])
def test_a_name_that_would_need_quoting_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ConfigError, match="EVENTPIPE_CLICKHOUSE_DSN"):
        named_database(f"http://u:p@127.0.0.1:1/{name}")


def test_the_database_is_created_once_and_again_is_no_error(chdb_root: Path) -> None:
    client = connect(f"chdb://{chdb_root}")
    name = f"created_{uuid.uuid4().hex[:8]}"
    create(client, name)
    create(client, name)
    assert client.command(f"EXISTS DATABASE {name}") == 1
    client.close()


def outside() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("EVENTPIPE_")}


def test_migrate_stops_on_a_bad_name_before_connecting_and_names_the_setting() -> None:
    env = {**outside(), "EVENTPIPE_CLICKHOUSE_DSN": "http://u:hunter2pw@127.0.0.1:1/bad`name"}
    done = run_eventpipe("migrate", env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "EVENTPIPE_CLICKHOUSE_DSN" in done.stderr
    assert "hunter2pw" not in done.stdout + done.stderr


def test_migrate_says_it_cannot_reach_the_server_without_its_password() -> None:
    port = free_port()
    env = {**outside(), "EVENTPIPE_CLICKHOUSE_DSN": f"http://u:hunter2pw@127.0.0.1:{port}/eventpipe"}
    done = run_eventpipe("migrate", env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "migrations applied" not in done.stdout
    assert "hunter2pw" not in done.stdout + done.stderr
    assert "ClickHouse at http://u:***@127.0.0.1" in done.stderr and "(EVENTPIPE_CLICKHOUSE_DSN)" in done.stderr
    # Once, in a line: the driver's and its pool's warnings of each attempt, and their paragraph of pool,
    # query id and retry text, said nothing more.
    [said] = done.stderr.strip().splitlines()
    assert said.endswith(f"(EVENTPIPE_CLICKHOUSE_DSN): cannot connect to 127.0.0.1:{port}: connection refused"), said


def test_the_worker_says_it_cannot_reach_the_server_naming_the_setting_without_its_password() -> None:
    # Named by `api` and `migrate`; the worker's said only "OperationalError: Error HTTPConnectionPool...".
    env = {
        **outside(),
        "EVENTPIPE_CLICKHOUSE_DSN": f"http://u:hunter2pw@127.0.0.1:{free_port()}/eventpipe",
        "EVENTPIPE_MQTT_SESSION_SECRET": "s" * 40,
        "EVENTPIPE_MQTT_URL": "mqtt://127.0.0.1:1",  # never reached: the store stops it first
        "EVENTPIPE_METRICS_PORT": "0",
    }
    done = run_eventpipe("worker", env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("eventpipe worker: error: ClickHouse at http://u:***@127.0.0.1:"), last
    assert "(EVENTPIPE_CLICKHOUSE_DSN)" in last and "hunter2pw" not in done.stdout + done.stderr, last


def test_the_api_names_which_of_its_two_dsns_it_cannot_reach(tmp_path: Path) -> None:
    # "OperationalError: Error HTTPConnectionPool..." did not say which was wrong (an attack).
    env = {
        **outside(),
        "EVENTPIPE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'clickhouse'}",
        "EVENTPIPE_ADMIN_CLICKHOUSE_DSN": f"http://admin:hunter2pw@127.0.0.1:{free_port()}/eventpipe",
        "EVENTPIPE_API_KEYS": "k" * 32,
        "EVENTPIPE_API_PORT": str(free_port()),
        "EVENTPIPE_METRICS_PORT": "0",
    }
    done = run_eventpipe("api", env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "(EVENTPIPE_ADMIN_CLICKHOUSE_DSN)" in done.stderr and "hunter2pw" not in done.stderr, done.stderr[-500:]


def test_an_https_dsn_speaks_tls_from_its_first_byte_whatever_its_port() -> None:
    # The driver takes TLS from the port alone (443, 8443): https://u:pw@host:8123/db sent its
    # Authorization header, password and all, in plain text.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(10)
        received: list[bytes] = []

        def accept() -> None:
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                listener.close()  # the driver's retries are refused at once
                with connection:
                    connection.settimeout(5)
                    received.append(connection.recv(4096))

        thread = threading.Thread(target=accept)
        thread.start()
        with contextlib.suppress(StorageError):
            connect(f"https://u:Zq9pass@127.0.0.1:{port}/db")
        thread.join()
    assert received and received[0][:1] == b"\x16", f"no TLS handshake: {received[:1]!r}"
    assert b"Zq9pass" not in received[0] and b"POST" not in received[0]
