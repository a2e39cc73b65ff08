"""Dead letters for a replay: which ones it takes, their payloads, and what it made of them.

A replay takes letters oldest first and never one already replayed; a letter
that failed is taken again only under another contract (the parser and limits
the attempt ran under), unless named by id. Outcomes are appended to
dead_letter_outcomes, never written over the letter (store.schema.record). Every
value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.query import Query
from eventpipe.store.reader import StoredDeadLetter, dead_letter_row
from eventpipe.store.writer import INSERT_SETTINGS

OUTCOME_COLUMNS = ("dead_letter_id", "attempted_at", "status", "contract", "reason", "detail")
LETTER_FIELDS = "dead_letter_id, toUnixTimestamp64Milli(received_at), topic, reason, detail, payload, payload_size"


class Selection(NamedTuple):
    """Which dead letters a replay asks for; None is any."""

    reason: str | None = None
    since_ms: int | None = None  # received at or after, inclusive
    until_ms: int | None = None  # received before, exclusive
    ids: tuple[str, ...] | None = None


class Candidate(NamedTuple):
    dead_letter_id: str
    stored_bytes: int  # of its payload as stored


class Outcome(NamedTuple):
    dead_letter_id: str
    attempted_ms: int
    status: str  # replayed or failed
    contract: str
    reason: str  # why it still fails; empty when replayed
    detail: str


class Outcomes:
    def __init__(self, client: Client) -> None:
        self._client = client

    def candidates(self, selection: Selection, contract: str, limit: int) -> list[Candidate]:
        """The first `limit` letters of `selection` due for an attempt under `contract`, oldest first.

        Reads ids and payload sizes only (the .size subcolumn), never a payload."""
        sql, parameters = _due(selection, contract)
        query = Query(
            f"SELECT dead_letter_id, payload.size FROM dead_letters FINAL WHERE {sql}"  # noqa: S608 - constants
            " ORDER BY received_at, dead_letter_id LIMIT {limit:UInt32}",
            parameters | {"limit": limit},
        )
        return [Candidate(str(key), int(str(size))) for key, size in self._run(query)]

    def due(self, selection: Selection, contract: str) -> int:
        """How many letters of `selection` are still due for an attempt under `contract`."""
        sql, parameters = _due(selection, contract)
        return int(str(self._run(Query(f"SELECT count() FROM dead_letters FINAL WHERE {sql}", parameters))[0][0]))  # noqa: S608

    def letters(self, ids: Sequence[str]) -> list[StoredDeadLetter]:
        """The letters with these ids, payloads as bytes; sorted by id, as the table is."""
        query = Query(
            f"SELECT {LETTER_FIELDS} FROM dead_letters FINAL WHERE dead_letter_id IN {{ids:Array(String)}}"  # noqa: S608
            " ORDER BY dead_letter_id",
            {"ids": list(ids)},
        )
        return [dead_letter_row(row) for row in self._run(query, binary=("payload",))]

    def record(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        with classified():
            self._client.insert(
                "dead_letter_outcomes",
                [list(outcome) for outcome in outcomes],
                column_names=OUTCOME_COLUMNS,
                settings=INSERT_SETTINGS,
            )

    def _run(self, query: Query, binary: tuple[str, ...] = ()) -> list[tuple[object, ...]]:
        formats: dict[str, str | dict[str, str]] | None = dict.fromkeys(binary, "bytes") if binary else None
        with classified():
            result = self._client.query(query.sql, parameters=query.parameters, column_formats=formats)
            return [tuple(row) for row in result.result_rows]


def _due(selection: Selection, contract: str) -> tuple[str, dict[str, object]]:
    """The WHERE clause of the letters of `selection` an attempt under `contract` should take."""
    # Never a replayed letter; a failed one again only under another contract,
    # or when asked for by id (an operator's explicit retry).
    settled = "status = 'replayed'"
    if selection.ids is None:
        settled += " OR contract = {contract:String}"
    outcomes = f"SELECT dead_letter_id FROM dead_letter_outcomes WHERE {settled}"  # noqa: S608 - constants
    conditions = [f"dead_letter_id NOT IN ({outcomes})"]
    parameters: dict[str, object] = {"contract": contract}
    if selection.reason is not None:
        conditions.append("reason = {reason:String}")
        parameters["reason"] = selection.reason
    if selection.since_ms is not None:
        conditions.append("received_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
        parameters["since_ms"] = selection.since_ms
    if selection.until_ms is not None:
        conditions.append("received_at < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')")
        parameters["until_ms"] = selection.until_ms
    if selection.ids is not None:
        conditions.append("dead_letter_id IN {ids:Array(String)}")
        parameters["ids"] = list(selection.ids)
    return " AND ".join(conditions), parameters
