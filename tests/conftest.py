"""Fixtures shared by every suite: a real broker, a fresh ClickHouse database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.services import ContainerBroker, LocalBroker, chdb_database_dsn, running_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker | ContainerBroker]:
    with running_broker(tmp_path / "mosquitto") as running:
        yield running


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


@pytest.fixture
def clickhouse_dsn(chdb_root: Path) -> str:
    return chdb_database_dsn(chdb_root)
