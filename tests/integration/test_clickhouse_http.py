"""The Writer against a ClickHouse server's HTTP answers that no local server gives on demand: an insert
failing after its headers went out, and a redirect (tests/support/clickhouse_http.py models both)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from eventpipe.errors import RejectedDataError, RetryableStorageError, StorageError, UnknownStorageError
from eventpipe.events import Event, Limits, parse
from eventpipe.producer.publisher import publish_demo
from eventpipe.store.client import connect
from eventpipe.store.writer import Writer
from tests.support.clickhouse_http import ClickHouseHttp, migrated
from tests.support.pipeline import running_worker, settings_for
from tests.support.services import ContainerBroker, LocalBroker
from tests.support.wait import wait_until

RECEIVED_MS = 1_763_800_000_000
EVENTS_INSERT = "INSERT INTO `events`"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHttp]:
    with migrated(tmp_path_factory.mktemp("clickhouse-http")) as running:
        yield running


@pytest.fixture
def client(server: ClickHouseHttp) -> Iterator[clickhouse_connect.driver.Client]:
    server.fault("ok")
    yield connect(server.dsn)
    server.fault("ok")


def sample(count: int, prefix: str) -> list[Event]:
    rows = []
    for i in range(count):
        body = {"event_id": f"{prefix}-{i}", "timestamp": RECEIVED_MS - i, "user_id": "u", "n": i}
        row = parse("events/click", json.dumps(body).encode(), RECEIVED_MS, Limits())
        assert isinstance(row, Event)
        rows.append(row)
    return rows


def stored(client: clickhouse_connect.driver.Client, prefix: str) -> int:
    sql = "SELECT count() FROM events FINAL WHERE startsWith(event_id, {p:String})"
    return int(client.query(sql, parameters={"p": f"{prefix}-"}).result_rows[0][0])


def test_an_insert_failing_after_a_minute_raises_a_retryable_error_and_is_not_taken_as_stored(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client
) -> None:
    # Past the progress interval the driver asks for (55 s with a 60 s timeout), a real server would
    # have sent its 200 and progress headers, and could only write the failure into the body.
    server.fault("late_error", match=EVENTS_INSERT, runs_ms=600_000)
    events = sample(20, "late")
    with pytest.raises(RetryableStorageError, match="241"):
        Writer(client).insert_events(events, isolate_unknown=True)
    server.fault("ok")
    assert stored(client, "late") == 0
    assert Writer(client).insert_events(events) == []
    assert stored(client, "late") == 20


@pytest.mark.parametrize(
    "message",
    [
        "Code: 75. DB::ErrnoException: Cannot write to file /var/lib/clickhouse/store/x.bin, errno: 28,"
        " strerror: No space left on device. (CANNOT_WRITE_TO_FILE_DESCRIPTOR) (version 26.3.17.110)",
        "Code: 209. DB::NetException: Timeout exceeded while reading from socket. (SOCKET_TIMEOUT)",
        "Code: 999. Coordination::Exception: Connection loss. (KEEPER_EXCEPTION)",
    ],
    ids=["disk full", "socket", "keeper"],
)
def test_a_late_failure_of_any_exception_class_is_raised(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client, message: str
) -> None:
    # The check looked for "DB::Exception" only: a disk filling during an insert (DB::ErrnoException) was
    # acked, and a migration's copy failing so looked done (found by an attack on the check).
    server.fault("late_error", match=EVENTS_INSERT, runs_ms=600_000, message=message)
    with pytest.raises(StorageError, match=message.split(".")[0]):
        Writer(client).insert_events(sample(5, "classes"))
    server.fault("late_error", match="INSERT INTO copied", runs_ms=600_000, message=message)
    client.command("CREATE TABLE IF NOT EXISTS copied (n UInt64) ENGINE = MergeTree ORDER BY n")
    with pytest.raises(StorageError, match=message.split(".")[0]):
        client.command("INSERT INTO copied SELECT number FROM numbers(10)")
    server.fault("ok")
    assert stored(client, "classes") == 0


def test_a_proxys_own_page_with_status_200_is_no_stored_batch(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client
) -> None:
    # A proxy in front of ClickHouse answering an insert with its maintenance page and a 200: the batch was
    # taken as stored, and a migration's copy returned the page as its value (found by an attack).
    writer = Writer(client)
    assert writer.insert_events(sample(5, "before")) == []  # the writer has its insert context, as a worker's
    server.fault("page", match=EVENTS_INSERT)
    with pytest.raises(RetryableStorageError, match="not ClickHouse's"):
        writer.insert_events(sample(10, "paged"))
    server.fault("ok")
    assert stored(client, "paged") == 0
    assert writer.insert_events(sample(10, "paged")) == []
    assert stored(client, "paged") == 10


def test_an_insert_running_longer_than_the_read_timeout_is_kept_alive_and_taken_as_stored(
    server: ClickHouseHttp,
) -> None:
    # The progress headers hold a long insert past the read timeout (16 s here, so 11 s between headers).
    # Asking for none, to see a late failure as a 500, made a 20 s insert that succeeded time out: never
    # acked, and stored again by every retry (found by a review of that change).
    server.fault("slow", match=EVENTS_INSERT, runs_ms=20_000)
    client = connect(server.dsn, timeout_s=16)
    events = sample(20, "slow")
    assert Writer(client).insert_events(events) == []
    server.fault("ok")
    assert stored(client, "slow") == 20


def test_a_redirected_insert_fails_is_not_sent_on_and_is_not_taken_as_stored(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client
) -> None:
    server.fault("redirect", match=EVENTS_INSERT, status=307)
    events = sample(20, "moved")
    with pytest.raises(StorageError) as raised:
        Writer(client).insert_events(events, isolate_unknown=True)
    # Retried as the batch it is: neither dead-lettered nor bisected for a poison row.
    assert not isinstance(raised.value, RejectedDataError | UnknownStorageError), raised.value
    assert server.elsewhere_requests() == 0
    server.fault("ok")
    assert stored(client, "moved") == 0
    assert Writer(client).insert_events(events) == []
    assert stored(client, "moved") == 20


def test_the_worker_acks_nothing_of_batches_failing_after_a_minute_and_stores_them_once_the_store_takes_them(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client, broker: LocalBroker | ContainerBroker
) -> None:
    before = int(str(client.command("SELECT count() FROM events FINAL")))
    server.fault("late_error", match=EVENTS_INSERT, runs_ms=600_000)
    with running_worker(settings_for(broker.url, server.dsn)) as run:
        assert publish_demo(broker.url, 100, seed=21).acknowledged == 100
        retries = partial(run.metric, "eventpipe_storage_errors_total", **{"class": "retry"})
        acked = partial(run.metric, "eventpipe_messages_acked_total")
        wait_until(lambda: retries() >= 3 or acked() > 0, what="the failing batch retried")
        assert acked() == 0, f"{acked():.0f} messages acked, none stored"
        assert run.metric("eventpipe_events_stored_total") == 0
        server.fault("ok")
        wait_until(lambda: acked() == 100, what="100 acks")
        assert run.metric("eventpipe_events_stored_total") == 100
    assert int(str(client.command("SELECT count() FROM events FINAL"))) == before + 100


def test_a_command_failing_after_its_headers_went_out_raises_instead_of_returning_the_failure(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client
) -> None:
    # A migration's copy (INSERT ... SELECT, then EXCHANGE TABLES) goes through client.command, which
    # returned the exception block of a late failure as its value: the copy looked done, the half-filled
    # table was swapped in, and the old one dropped.
    client.command("CREATE TABLE IF NOT EXISTS copied (n UInt64) ENGINE = MergeTree ORDER BY n")
    server.fault("late_error", match="INSERT INTO copied", runs_ms=600_000)
    with pytest.raises(RetryableStorageError, match="241"):
        client.command("INSERT INTO copied SELECT number FROM numbers(10)")
    server.fault("ok")
    client.command("INSERT INTO copied SELECT number FROM numbers(10)")
    assert client.command("SELECT count() FROM copied") == 10


def test_a_large_insert_is_stored_whole(server: ClickHouseHttp, client: clickhouse_connect.driver.Client) -> None:
    # The driver compresses an insert one chunk at a time, a frame each; the fake read the first frame
    # only and answered 200, so 16,384 rows of 250,000 were stored and a test losing data could pass.
    client.command("CREATE TABLE IF NOT EXISTS large (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
    client.insert("large", [[n, f"row {n}"] for n in range(250_000)], column_names=["n", "s"])
    assert client.query("SELECT count(), uniqExact(n) FROM large").result_rows == [(250_000, 250_000)]


def test_a_bound_parameter_past_the_servers_field_cap_is_refused_as_a_server_refuses_it(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client
) -> None:
    # Large parameters go in a multipart form, whose fields a server caps at http_max_field_value_size.
    sql = "SELECT length({ids:Array(String)})"
    assert client.query(sql, parameters={"ids": ["x" * 30] * 3000}).result_rows == [(3000,)]
    with pytest.raises(DatabaseError, match="Field value too long"):
        client.query(sql, parameters={"ids": ["x" * 30] * 5000})


def test_a_querys_parameters_travel_in_its_body_never_in_its_url(
    server: ClickHouseHttp, client: clickhouse_connect.driver.Client
) -> None:
    # The driver put parameters of 4 KB or less in the URL, which a proxy in front of a server, or the server at
    # trace level, writes into its access log: a user id a page of the API filters by, say.
    sql = "SELECT {user:String}, {n:UInt32}"
    assert client.query(sql, parameters={"user": "zq7-url-user", "n": 7}).result_rows == [("zq7-url-user", 7)]
    sent = json.loads(server.statements()[-1])
    assert sent["parameters"]["param_user"] == "zq7-url-user"
    assert "zq7-url-user" not in sent["url"] and "param_" not in sent["url"], sent["url"]
