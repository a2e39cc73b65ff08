"""A store that a module's read-only tests share, seeded once instead of once per test.

Migrating an empty store takes most of a second (over a hundred DDL statements), and modules such as
test_filter ran it for each of their sixty cases. Sharing is for tests that only read what the seed
made, through the API's read-only user or the Reader; a test that writes takes clickhouse_dsn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.services import ClickHouseServer, empty_dsn, use_docker

T = TypeVar("T")


class SharedStores:
    """What each seed made, by seed. The embedded engine gives each seed a database of its own for the
    module. A ClickHouse container has one database for the session, which every clickhouse_dsn empties:
    there a seed is made again whenever the database was emptied after it was made."""

    def __init__(self, request: pytest.FixtureRequest, chdb_root: Path) -> None:
        self._request = request
        self._chdb_root = chdb_root
        self._made: dict[Callable[[str], Any], tuple[int, Any]] = {}
        self.dsns: list[str] = []  # every store a seed was given, to drop with the module

    def get(self, seed: Callable[[str], T]) -> T:
        """`seed(dsn)`'s answer, where `dsn` named an empty store when `seed` ran."""
        made = self._made.get(seed)
        if made is None or made[0] != self._resets():
            dsn = empty_dsn(self._request, self._chdb_root)
            self.dsns.append(dsn)
            made = self._made[seed] = (self._resets(), seed(dsn))
        value: T = made[1]
        return value

    def _server(self) -> ClickHouseServer | None:
        if not use_docker():
            return None
        server: ClickHouseServer = self._request.getfixturevalue("clickhouse_server")
        return server

    def _resets(self) -> int:
        server = self._server()
        return server.resets if server is not None else 0


__all__ = ["SharedStores"]
