"""Fixtures shared by every suite: a real broker, a fresh ClickHouse database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from eventpipe.port import set_share
from eventpipe.stack.child import find_binary
from tests.support.compose import persist_plugin
from tests.support.services import (
    ClickHouseServer,
    ContainerBroker,
    LocalBroker,
    docker_available,
    docker_required,
    drop_database,
    empty_dsn,
    missing_docker_message,
    running_broker,
)
from tests.support.shared import SharedStores
from tests.support.takeover import PASSWORDS, ComposeBroker

# Modules holding a test that keeps one process busy for a minute or more (the 10M-event store, the quick
# bench, the million-event export, a store over decades, the live stack): run first, so that the short
# tests are what is left at the end for whichever process is free (xdist's worksteal), rather than one
# process working alone on a long test while the other has nothing left.
FIRST = (
    "tests/integration/test_scale.py",
    "tests/e2e/test_bench.py",
    "tests/integration/test_export.py",
    "tests/integration/test_worker.py",
    "tests/observability/test_live.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One test process more than the cores (`--maxprocesses` keeps it to four): much of the suite waits
    rather than computes (a minute for Alertmanager's heartbeat, the broker's 10 s ticks, timeouts that must
    run out), and a third process on two cores fills that. Two runs of one commit on one two-core machine:
    926 s of tests with three processes, 1,189 s with two (22 min overall, past CI's 20)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1


def pytest_configure(config: pytest.Config) -> None:
    # Each pytest-xdist process hands its servers only ports of its own share (eventpipe.port.set_share):
    # each remembers only its own ports, and two could be handed one port before either listened on it.
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        set_share(int(worker["workerid"].removeprefix("gw")), int(worker["workercount"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Stable: each module's tests keep their order, and so their module-scoped fixtures.
    items.sort(key=lambda item: not item.nodeid.startswith(FIRST))


def pytest_sessionstart(session: pytest.Session) -> None:
    # Where Docker is required (the GitLab pipeline), say so before any test runs, not test by test.
    if docker_required() and not docker_available():
        pytest.exit(missing_docker_message(), returncode=1)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker | ContainerBroker]:
    with running_broker(tmp_path / "mosquitto") as running:
        yield running


@pytest.fixture
def compose_broker(tmp_path: Path) -> Iterator[ComposeBroker]:
    """The compose broker's config, users and ACL on a free port (tests/support/takeover.py): on the Mosquitto
    2.1 EVENTPIPE_MOSQUITTO_BINARY or PATH gives where its persist-sqlite plugin is given (compose's image is
    2.1), as tests/fault/test_broker_kill.py runs it; else on Debian's 2.0 with snapshots."""
    binary = find_binary(os.environ.get("EVENTPIPE_MOSQUITTO_BINARY", "mosquitto")) if persist_plugin() else None
    running = ComposeBroker(tmp_path / "mosquitto", PASSWORDS, binary=binary)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[[int], LocalBroker | ContainerBroker]]:
    """Brokers with a given in-flight window, for tests whose worker uses another than the default."""
    with ExitStack() as stack:

        def make(receive_maximum: int) -> LocalBroker | ContainerBroker:
            directory = tmp_path / f"mosquitto-{receive_maximum}"
            return stack.enter_context(running_broker(directory, receive_maximum))

        yield make


@pytest.fixture(scope="session")
def chdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB hosts one engine path per process, so the whole session shares one
    # directory and each test gets its own database inside it.
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[ClickHouseServer]:
    """The compose ClickHouse service as a container, one for the session (it takes seconds to start)."""
    server = ClickHouseServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clickhouse_dsn(request: pytest.FixtureRequest, chdb_root: Path) -> Iterator[str]:
    """A ClickHouse with an empty database (tests.support.services.empty_dsn), dropped after the test."""
    dsn = empty_dsn(request, chdb_root)
    yield dsn
    drop_database(chdb_root, dsn)


@pytest.fixture(scope="module")
def shared_stores(request: pytest.FixtureRequest, chdb_root: Path) -> Iterator[SharedStores]:
    """Stores seeded once for a module's tests that only read them (tests/support/shared.py)."""
    stores = SharedStores(request, chdb_root)
    yield stores
    for dsn in stores.dsns:
        drop_database(chdb_root, dsn)
