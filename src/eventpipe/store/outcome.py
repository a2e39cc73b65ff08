"""Dead letters for a replay: which ones it takes, their payloads, and what it made of them.

A replay takes letters oldest first and never one already replayed; a letter
that failed is taken again only under another contract (the parser and limits
the attempt ran under), unless named by id. Outcomes are appended to
dead_letter_outcomes, never written over the letter (store.schema.record). Every
value is a bound parameter; a list of ids goes in as many queries as keep each
list under a server's cap on one (query.PARAMETER_BYTES).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.query import DEAD_LETTER_FIELDS, Query, bound_bytes, parameter_chunks, time_range
from eventpipe.store.row import StoredDeadLetter, dead_letter_row
from eventpipe.store.writer import INSERT_SETTINGS

OUTCOME_COLUMNS = ("dead_letter_id", "attempted_at", "status", "contract", "reason", "detail")
RECEIVED_MS = "toUnixTimestamp64Milli(received_at)"


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
        rows: list[tuple[object, ...]] = []
        for part in _parts(selection):
            sql, parameters = _due(part, contract)
            query = Query(
                f"SELECT dead_letter_id, payload.size, {RECEIVED_MS} FROM dead_letters FINAL WHERE {sql}"  # noqa: S608
                " ORDER BY received_at, dead_letter_id LIMIT {limit:UInt32}",
                parameters | {"limit": limit},
            )
            rows += self._run(query)
        # Each part's rows are in order; several parts' are merged into one order.
        rows.sort(key=lambda row: (int(str(row[2])), str(row[0])))
        return [Candidate(str(key), int(str(size))) for key, size, _ in rows[:limit]]

    def due(self, selection: Selection, contract: str) -> int:
        """How many letters of `selection` are still due for an attempt under `contract`."""
        count = 0
        for part in _parts(selection):
            sql, parameters = _due(part, contract)
            count += int(str(self._run(Query(f"SELECT count() FROM dead_letters FINAL WHERE {sql}", parameters))[0][0]))  # noqa: S608
        return count

    def letters(self, ids: Sequence[str]) -> list[StoredDeadLetter]:
        """The letters with these ids, payloads as bytes; sorted by id, as the table is."""
        found = []
        # Sorted first, so that the parts' answers, each sorted, follow one another in order.
        for part in parameter_chunks(sorted(set(ids)), bound_bytes):
            query = Query(
                f"SELECT {DEAD_LETTER_FIELDS} FROM dead_letters FINAL WHERE dead_letter_id IN {{ids:Array(String)}}"  # noqa: S608
                " ORDER BY dead_letter_id",
                {"ids": part},
            )
            found += [dead_letter_row(row) for row in self._run(query, binary=("payload",))]
        return found

    def known(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` a dead letter has (without FINAL: a copy is enough to be known)."""
        found: set[str] = set()
        for part in parameter_chunks(sorted(set(ids)), bound_bytes):
            query = Query(
                "SELECT DISTINCT dead_letter_id FROM dead_letters WHERE dead_letter_id IN {ids:Array(String)}",
                {"ids": part},
            )
            found |= {str(row[0]) for row in self._run(query)}
        return found

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


def _parts(selection: Selection) -> list[Selection]:
    """`selection` as selections whose ids each fit in one bound parameter: a ClickHouse server refuses a
    longer one (query.PARAMETER_BYTES), and a replay by 1,000 ids of 64 characters may not fit."""
    if selection.ids is None:
        return [selection]
    return [selection._replace(ids=tuple(ids)) for ids in parameter_chunks(sorted(set(selection.ids)), bound_bytes)]


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
    time_range(conditions, parameters, "received_at", selection.since_ms, selection.until_ms)
    if selection.ids is not None:
        conditions.append("dead_letter_id IN {ids:Array(String)}")
        parameters["ids"] = list(selection.ids)
    return " AND ".join(conditions), parameters
