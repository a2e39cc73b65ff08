"""What a restore leaves to redo, counted on the restored store: the erasures the audit records since the
backup was taken, and the users erased before it that it holds again (store.lineage's order, not clocks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.lineage import (
    ERASURES_SINCE,
    FINISHED_RESTORES,
    PLACES,
    Place,
    catalogued,
    earliest,
    erased_since,
    from_place,
    named,
    recorded,
    returned,
)
from eventpipe.store.naming import taken_ms


def erasures_since(client: Client, name: str) -> tuple[int, int]:
    """How many erasures the audit records since backup `name` was taken, in the audit's order
    (store.lineage), and the oldest time they were recorded at (0 for none)."""
    with classified():
        rows = _rows(client, f"{PLACES} WHERE name = {{n:String}}", {"n": name})
        sql, parameters = erased_since(bool(rows), _ordinal(rows[0][2]) if rows else None, taken_ms(name))
        count, oldest = _rows(client, sql, parameters)[0]
    return int(str(count)), int(str(oldest)) if int(str(count)) else 0


def users_returned(client: Client, name: str) -> tuple[int | None, int]:
    """How many users erased before backup `name` was taken it holds again, and since when (store.lineage);
    None for a backup this store's catalog does not list (taken on another host, whose restores this
    store does not know)."""
    with classified():
        restores = [
            (recorded(int(str(o)), int(str(at))), str(backup)) for at, o, backup in _rows(client, FINISHED_RESTORES)
        ]
        catalog = {
            str(backup): catalogued(_ordinal(ordinal), int(str(at))) for backup, at, ordinal in _rows(client, PLACES)
        }
        if name not in catalog:
            return None, 0

        def taken(backup: str) -> tuple[Place, Place]:
            # Exact where the catalog has it; else within the second its name gives.
            return catalog.get(backup) or named(taken_ms(backup))

        since = earliest(name, taken, restores)
        rows = [
            (int(str(at)), recorded(int(str(o)), int(str(at))), str(user))
            for at, o, user in _rows(client, ERASURES_SINCE, from_place(since))
        ]
    back = returned(name, taken, restores, [(place, user) for _, place, user in rows])
    return len(back), min((at for at, _, user in rows if user in back), default=0)


def _ordinal(value: object) -> int | None:
    """A catalog row's ordinal_before: None where it was recorded before migration 24."""
    return None if value is None else int(str(value))


def _rows(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Sequence[Sequence[Any]]:
    return client.query(sql, parameters=parameters).result_rows
