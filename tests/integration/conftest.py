"""Fixtures shared by the integration tests."""

from __future__ import annotations

import clickhouse_connect
import pytest

from eventpipe.store.client import connect
from eventpipe.store.migration import migrate


@pytest.fixture
def client(clickhouse_dsn: str) -> clickhouse_connect.driver.Client:
    """A client on an empty store with every migration applied."""
    client = connect(clickhouse_dsn)
    migrate(client)
    return client
