"""The erasure audit: one record of each erasure, with a keyed hash of the user id in place of the id.

The records are kept in the `erasures` table (store.schema.record), numbered in the audit's order
(store.lineage), appended and read here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.lineage import RECORDED_SO_FAR
from eventpipe.store.page import Position
from eventpipe.store.writer import INSERT_SETTINGS

ERASURE_COLUMNS = ("erasure_id", "erased_at", "key_name", "user_hash", "events", "dead_letters", "complete")
# A key makes the audit's hashes unrecognisable to whoever reads the table
# without it: an unkeyed hash of a short id is found by hashing every likely id.
_CONTEXT = b"eventpipe erasure key\x00"


class Erasure(NamedTuple):
    """One audit record."""

    erasure_id: str
    erased_ms: int
    key_name: str
    user_hash: str
    events: int
    dead_letters: int
    complete: bool


def user_hash(user_id: str, secret: str) -> str:
    """The keyed hash the audit keeps of a user id (HMAC-SHA256, hex)."""
    key = hashlib.sha256(_CONTEXT + secret.encode()).digest()
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


class Audit:
    """The records of the erasures made through `client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def record(self, erasure: Erasure, ordinal: int | None = None) -> None:
        """Append `erasure` to the audit, numbered in its order (store.lineage): read after its deletes are done,
        so a backup that read a count at or above it began after them, whatever the clocks said. A restore's
        redo gives the `ordinal` (store.backup: after its restore's, recorded once the redo is done)."""
        self.record_all([erasure], ordinal)

    def record_all(self, erasures: Sequence[Erasure], first: int | None = None) -> None:
        """Append `erasures` to the audit as `record` does one, numbered one after another from `first`, in
        one insert: a redo's 1,000 inserts, each synced to disk, took 20 s."""
        with classified():
            if first is None:
                first = int(str(self._client.query(f"SELECT {RECORDED_SO_FAR} + 1").result_rows[0][0]))
            self._client.insert(
                "erasures",
                [[*erasure, first + index] for index, erasure in enumerate(erasures)],
                column_names=(*ERASURE_COLUMNS, "ordinal"),
                settings=INSERT_SETTINGS,
            )

    def records(
        self, user_hash: str | None, limit: int, after: Position | None = None
    ) -> tuple[list[Erasure], Position | None]:
        """Audit records newest first, only those of one user's hash when given, and where the next page starts."""
        conditions, parameters = ["1"], dict[str, object](limit=limit + 1)
        if user_hash is not None:
            conditions.append("user_hash = {hash:String}")
            parameters["hash"] = user_hash
        if after is not None:
            bound = "fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')"
            conditions.append(f"erased_at <= {bound} AND (erased_at < {bound} OR erasure_id < {{after_id:String}})")
            parameters |= {"after_ms": after.time_ms, "after_id": after.id}
        sql = (
            "SELECT erasure_id, toUnixTimestamp64Milli(erased_at), key_name, user_hash, events, dead_letters, complete"  # noqa: S608
            f" FROM erasures WHERE {' AND '.join(conditions)}"
            " ORDER BY erased_at DESC, erasure_id DESC LIMIT {limit:UInt32}"
        )
        with classified():
            rows = self._client.query(sql, parameters=parameters).result_rows
        found = [
            Erasure(str(key), int(str(at)), str(name), str(digest), int(str(n)), int(str(m)), bool(whole))
            for key, at, name, digest, n, m, whole in rows
        ]
        page = found[:limit]
        more = len(found) > limit
        return page, Position(page[-1].erased_ms, page[-1].erasure_id) if more else None
