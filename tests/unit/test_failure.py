"""ClickHouse failures sorted into retry, dead-letter and halt."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError, ProgrammingError

from eventpipe.errors import HaltStorageError, RejectedDataError, RetryableStorageError, UnknownStorageError
from eventpipe.store.failure import by_code, classify, failed_answer, without_trace
from tests.support.gateway import GARBAGE, gateway, raised


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (DatabaseError("Too many parts", code=252), RetryableStorageError),
        (DatabaseError("Timeout exceeded", code=159), RetryableStorageError),
        (DatabaseError("Memory limit", code=241), RetryableStorageError),
        (OperationalError("connection refused"), RetryableStorageError),
        (ConnectionResetError("reset by peer"), RetryableStorageError),
        (DatabaseError("never seen before", code=123456), UnknownStorageError),
        (RuntimeError("something odd in the driver"), HaltStorageError),
        (ProgrammingError("Unrecognized column 'user_id' in table events"), HaltStorageError),
        (DatabaseError("Setting async_insert should not be changed", code=452), HaltStorageError),
        (DatabaseError("Quota exceeded", code=201), RetryableStorageError),
        (DatabaseError("Constraint violated", code=469), RejectedDataError),
        (DatabaseError("Authentication failed", code=516), HaltStorageError),
        (DatabaseError("Unknown table", code=60), HaltStorageError),
        (DatabaseError("Not enough privileges", code=497), HaltStorageError),
        (DatabaseError("No such column", code=16), HaltStorageError),
        (DatabaseError("Cannot parse input", code=27), RejectedDataError),
        (DatabaseError("Type mismatch", code=53), RejectedDataError),
        (DataError("value does not fit the column"), RejectedDataError),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), RejectedDataError),
    ],
)
def test_failures_are_classified(error: Exception, kind: type) -> None:
    classified = classify(error)
    assert type(classified) is kind
    assert type(error).__name__ in str(classified)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (502, RetryableStorageError),  # a load balancer whose ClickHouse is down or restarting
        (500, RetryableStorageError),
        (504, RetryableStorageError),
        (503, RetryableStorageError),
        (408, RetryableStorageError),
        (429, RetryableStorageError),
        (GARBAGE, RetryableStorageError),  # a proxy's own page, status 200
        (401, HaltStorageError),  # the proxy's login: the DSN's user or password
        (403, HaltStorageError),
        (404, HaltStorageError),  # a path that is not ClickHouse's
        (307, HaltStorageError),  # sent elsewhere: the DSN names the wrong address
    ],
)
def test_a_proxy_s_answers_without_a_clickhouse_code_are_classified_by_status(answer: int, kind: type) -> None:
    # Before, every HTTP status without ClickHouse's X-ClickHouse-Exception-Code (a proxy's 502) was a halt: the
    # API answered 500 storage_error, /readyz said ClickHouse refused its user, and the worker halted.
    with gateway() as server:
        for query in ("SELECT 1 FROM events", "SELECT 1 FROM events LIMIT 0"):  # rows, and /readyz's columns
            error = raised(server, answer, query)
            assert type(classify(error)) is kind, (query, repr(error))


TAG = "abcdefghijklmnop"
OURS = {"X-ClickHouse-Query-Id": "q1", "X-ClickHouse-Format": "TabSeparated"}
TAGGED = {**OURS, "X-ClickHouse-Exception-Tag": TAG}


def block(message: str) -> bytes:
    """A failure written after the 200, as ClickHouse 25.x+ writes it (the HTTP interface's docs)."""
    return f"\r\n__exception__\r\n{TAG}\r\n{message}\r\n{len(message)} {TAG}\r\n__exception__\r\n".encode()


@pytest.mark.parametrize(
    ("headers", "body", "kind"),
    [
        pytest.param(TAGGED, block("Code: 241. DB::Exception: Memory limit"), RetryableStorageError, id="tagged"),
        pytest.param(TAGGED, block("Code: 75. DB::ErrnoException: errno: 28"), UnknownStorageError, id="errno class"),
        pytest.param(
            TAGGED, block("Code: 999. Coordination::Exception: loss"), RetryableStorageError, id="keeper class"
        ),
        pytest.param(TAGGED, block("Code: 60. DB::Exception: Unknown table"), HaltStorageError, id="tagged halt"),
        pytest.param(TAGGED, block("no code at all"), UnknownStorageError, id="tagged without code"),
        pytest.param(
            OURS, b"Code: 241. DB::Exception: Memory limit (total) exceeded\n", RetryableStorageError, id="untagged"
        ),
        pytest.param({}, b"<html>Maintenance</html>", RetryableStorageError, id="proxy page"),
        pytest.param({}, b"", RetryableStorageError, id="proxy empty"),
        pytest.param(OURS, b"", None, id="insert done"),
        pytest.param(OURS, b"42\n", None, id="command value"),
        # Stored text that merely holds the words, in an answer without the tag, or with the tag and no block.
        pytest.param(OURS, b"a payload: Code: 1. DB::Exception: boom\n", None, id="stored text"),
        pytest.param(TAGGED, b"Code: 1. DB::Exception: boom\n", None, id="stored text, tag"),
    ],
)
def test_an_answer_read_whole_is_failed_by_what_it_carries(
    headers: dict[str, str], body: bytes, kind: type | None
) -> None:
    failure = failed_answer(headers, body)
    assert (type(failure) if failure is not None else None) is kind


def test_a_server_out_of_reach_is_said_in_a_few_words_and_retried() -> None:
    driver = (
        "Error HTTPConnectionPool(host='ch', port=8123): Max retries exceeded with url: /?query_id=1 (Caused by "
        "NewConnectionError(\"HTTPConnection(host='ch', port=8123): Failed to establish a new connection: "
        '[Errno 111] Connection refused")) executing HTTP request attempt 1 (http://ch:8123)'
    )
    refused = classify(OperationalError(driver))
    assert isinstance(refused, RetryableStorageError)
    assert str(refused) == "cannot connect to ch:8123: connection refused"
    unresolved = driver.replace("NewConnectionError", "NameResolutionError").replace(
        "Failed to establish a new connection: [Errno 111] Connection refused",
        "Failed to resolve 'ch' ([Errno -2] Name or service not known)",
    )
    assert str(classify(OperationalError(unresolved))) == "cannot connect to ch:8123: name or service not known"


def test_a_missing_table_or_database_says_what_to_do_and_stays_a_halt() -> None:
    # The worker logged "Table default.worker_marks does not exist" at every retry, and nothing else.
    for code in (16, 47, 60):
        failure = by_code(code, f"Code: {code}. DB::Exception: gone")
        assert isinstance(failure, HaltStorageError) and "run `eventpipe migrate` on it" in str(failure), code
    # A misspelt database: migrate would make it, and the worker fill a store nobody reads. The DSN first.
    database = by_code(81, "Code: 81. DB::Exception: Database eventpipe_typo does not exist")
    assert isinstance(database, HaltStorageError)
    assert "check the database the DSN names, then run `eventpipe migrate`" in str(database)
    assert "eventpipe migrate" not in str(by_code(241, "Code: 241. MEMORY_LIMIT_EXCEEDED"))


def test_a_stack_trace_is_cut_from_what_a_failure_says_and_the_code_s_name_kept() -> None:
    # chDB's error on opening a path it cannot make, as the CLI printed it: 36 lines, the cause in the first.
    frames = "".join(f"{n}. ? @ 0x000000002061bd{n:02}\n" for n in range(32))
    engine = (
        "Code: 36. DB::Exception: Error initializing EmbeddedServer: std::exception. Code: 1001, e.what() = "
        'filesystem error: in create_directories: No such file or directory ["/proc/nope"], Stack trace (when '
        "copying this message, always include the lines below):\n\n"
        f"{frames}\nCannot print extra info for Poco::Exception (version 26.9.2.1)\n. (BAD_ARGUMENTS)"
    )
    said = str(classify(ProgrammingError(engine)))
    assert said == (
        "ProgrammingError: Code: 36. DB::Exception: Error initializing EmbeddedServer: std::exception. Code: 1001, "
        'e.what() = filesystem error: in create_directories: No such file or directory ["/proc/nope"] (BAD_ARGUMENTS)'
    )
    assert str(classify(DatabaseError(engine, code=36))).endswith('["/proc/nope"] (BAD_ARGUMENTS)')
    assert without_trace("Code: 60. DB::Exception: Unknown table (UNKNOWN_TABLE)") == (
        "Code: 60. DB::Exception: Unknown table (UNKNOWN_TABLE)"
    )
