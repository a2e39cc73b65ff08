"""Fixtures shared by the integration tests."""

from __future__ import annotations

import clickhouse_connect
import pytest

from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer


@pytest.fixture
def client(clickhouse_dsn: str) -> clickhouse_connect.driver.Client:
    """A client on an empty store with every migration applied."""
    client = connect(clickhouse_dsn)
    migrate(client)
    return client


@pytest.fixture
def writer(client: clickhouse_connect.driver.Client) -> Writer:
    """A writer on that store, as the worker writes."""
    return Writer(client)
