"""The backups' catalog: the `backups` table records each backup taken, read here newest first."""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.store.page import Position
from eventpipe.store.query import Query

# The catalog's backups, as Backup takes them.
RECORDED = "SELECT name, toUnixTimestamp64Milli(taken_at), events, dead_letters, bytes FROM backups FINAL"
ORDER = " ORDER BY taken_at DESC, name DESC"


class Backup(NamedTuple):
    name: str
    taken_ms: int
    events: int
    dead_letters: int
    bytes: int


def recorded_query(limit: int | None, after: Position | None) -> Query:
    """The recorded backups after `after`, newest first: `limit` and one more, to tell whether a page follows
    (all of them with None)."""
    conditions, parameters = ["1"], dict[str, object]()
    if after is not None:
        bound = "fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')"
        conditions.append(f"taken_at <= {bound} AND (taken_at < {bound} OR name < {{after_name:String}})")
        parameters |= {"after_ms": after.time_ms, "after_name": after.id}
    sql = f"{RECORDED} WHERE {' AND '.join(conditions)}{ORDER}"
    if limit is not None:
        sql += " LIMIT {limit:UInt32}"
        parameters["limit"] = limit + 1
    return Query(sql, parameters)


def cut(found: list[Backup], limit: int | None) -> tuple[list[Backup], Position | None]:
    """The page of `found` (as recorded_query read it) and where the next one starts, None on the last."""
    if limit is None or len(found) <= limit:
        return found, None
    page = found[:limit]
    return page, Position(page[-1].taken_ms, page[-1].name)
