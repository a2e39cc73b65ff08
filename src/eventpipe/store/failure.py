"""Classify ClickHouse failures into retry, dead-letter or halt."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from clickhouse_connect.driver.exceptions import DatabaseError, DataError, Error, OperationalError

from eventpipe.errors import (
    HaltStorageError,
    RejectedDataError,
    RetryableStorageError,
    StorageError,
    UnknownStorageError,
)

# ClickHouse error codes, by what the pipe should do. Unknown codes retry as
# UnknownStorageError: nothing is acked meanwhile, and if they persist while
# the server answers, the worker bisects the batch (see ingest.worker).
RETRY_CODES = frozenset({
    3,  # UNEXPECTED_END_OF_FILE
    32,  # ATTEMPT_TO_READ_AFTER_EOF
    159,  # TIMEOUT_EXCEEDED
    160,  # TOO_SLOW
    201,  # QUOTA_EXCEEDED (the quota window passes)
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY (replica lost Keeper for a while)
    252,  # TOO_MANY_PARTS
    285,  # TOO_FEW_LIVE_REPLICAS
    319,  # UNKNOWN_STATUS_OF_INSERT
    394,  # QUERY_WAS_CANCELLED
    425,  # SYSTEM_ERROR
    439,  # CANNOT_SCHEDULE_TASK
    999,  # KEEPER_EXCEPTION
    1000,  # POCO_EXCEPTION (network)
})  # fmt: skip
HALT_CODES = frozenset({
    8,  # THERE_IS_NO_COLUMN
    10,  # NOT_FOUND_COLUMN_IN_BLOCK
    16,  # NO_SUCH_COLUMN_IN_TABLE
    47,  # UNKNOWN_IDENTIFIER
    60,  # UNKNOWN_TABLE
    62,  # SYNTAX_ERROR
    81,  # UNKNOWN_DATABASE
    115,  # UNKNOWN_SETTING
    164,  # READONLY
    192,  # UNKNOWN_USER
    193,  # WRONG_PASSWORD
    194,  # REQUIRED_PASSWORD
    195,  # IP_ADDRESS_NOT_ALLOWED
    243,  # NOT_ENOUGH_SPACE
    291,  # DATABASE_ACCESS_DENIED
    452,  # SETTING_CONSTRAINT_VIOLATION (a profile forbids an insert setting)
    497,  # ACCESS_DENIED
    516,  # AUTHENTICATION_FAILED
})  # fmt: skip
REJECT_CODES = frozenset({
    6,  # CANNOT_PARSE_TEXT
    26,  # CANNOT_PARSE_QUOTED_STRING
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  # CANNOT_PARSE_DATE
    41,  # CANNOT_PARSE_DATETIME
    53,  # TYPE_MISMATCH
    69,  # ARGUMENT_OUT_OF_BOUND
    70,  # CANNOT_CONVERT_TYPE
    72,  # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    469,  # VIOLATED_CONSTRAINT
})  # fmt: skip
# An HTTP status with no ClickHouse code: something in front of the server (a proxy, a load balancer) answered.
# The driver says so only in its message (clickhouse_connect's build_http_error).
HTTP_STATUS = re.compile(r"HTTP driver received HTTP status (\d{3})\b")
# Of those, the ones that pass: the proxy's upstream is down or restarting, or it sheds load. The others
# (a refused login, a path or host that is not ClickHouse's, a redirect) last until an operator fixes the DSN.
RETRY_STATUSES = frozenset({408, 429})


# A failure ClickHouse writes into an answer whose 200 has gone out (the HTTP interface's "response codes
# caveats"): since 25.x inside a block its X-ClickHouse-Exception-Tag header names, before that as the body
# itself. Not only DB::Exception: a disk filling mid-insert is DB::ErrnoException, Keeper's is
# Coordination::Exception.
EXCEPTION_TAG = "X-ClickHouse-Exception-Tag"
UNTAGGED_FAILURE = re.compile(r"\A\s*Code: \d+\. [\w:]*Exception")
FAILURE_CODE = re.compile(r"Code: (\d+)\.")
# The block comes last, and is short.
FAILURE_TAIL = 16_384


def failed_answer(headers: Mapping[str, str], body: bytes) -> StorageError | None:
    """The failure a 2xx answer read whole (an insert's, a statement's) carries, or None: one written after
    its status line, or an answer that is not ClickHouse's at all (a proxy's own page), which would
    otherwise be taken for a stored batch or a finished copy."""
    if not any(name.lower().startswith("x-clickhouse-") for name in headers):
        # ClickHouse names the query, its format and time zone on every answer; a proxy's page does not.
        return RetryableStorageError(f"an answer that is not ClickHouse's (no X-ClickHouse- header): {body[:120]!r}")
    tail = body[-FAILURE_TAIL:].decode(errors="replace")
    tag = headers.get(EXCEPTION_TAG)
    if tag:
        opening, closing = f"__exception__\r\n{tag}", f"{tag}\r\n__exception__"
        start = tail.find(opening)
        if start < 0:
            return None
        text = tail[start + len(opening) :].split(closing, 1)[0].strip()
    elif UNTAGGED_FAILURE.match(tail):
        text = tail.strip()
    else:
        return None
    code = FAILURE_CODE.search(text)
    return by_code(int(code[1]), text) if code else UnknownStorageError(text)


# What a halt for a missing table or column says to do: the store was never migrated, or an older
# eventpipe migrated it (the log said only "Table default.worker_marks does not exist"). A missing
# database is as likely a DSN naming the wrong one, which `eventpipe migrate` would make, and the
# worker then fill a store nobody reads: the DSN first.
SCHEMA_HINT = "; is this store migrated? run `eventpipe migrate` on it (`eventpipe up` migrates its own at start)"
DATABASE_HINT = "; check the database the DSN names, then run `eventpipe migrate`, which makes it (as the DSN's user)"
HALT_HINTS = {
    16: SCHEMA_HINT,  # NO_SUCH_COLUMN_IN_TABLE
    47: SCHEMA_HINT,  # UNKNOWN_IDENTIFIER
    60: SCHEMA_HINT,  # UNKNOWN_TABLE
    81: DATABASE_HINT,  # UNKNOWN_DATABASE
}


def by_code(code: int, message: str) -> StorageError:
    """What ClickHouse's error `code` says to do, as the StorageError subclass for it."""
    if code in HALT_CODES:
        return HaltStorageError(message + HALT_HINTS.get(code, ""))
    if code in REJECT_CODES:
        return RejectedDataError(message)
    if code in RETRY_CODES:
        return RetryableStorageError(message)
    return UnknownStorageError(message)


# A server that cannot be reached, as urllib3 says it inside the driver's OperationalError (a paragraph of
# pool, query id and retry text around it).
UNREACHABLE = re.compile(
    r"host='([^']*)', port=(\d+)\): (?:Failed to establish a new connection: |Failed to resolve '[^']*' \()"
    r"(?:\[Errno -?\d+\] )?([^\"')]+)"
)


# ClickHouse appends a stack trace to some errors; chDB's, raised in this process, to every one it opens
# with: 30-odd lines of addresses and symbols of other libraries, which tell an operator nothing and
# buried the one line that did ("No such file or directory").
STACK_TRACE = "Stack trace (when copying this message"
CODE_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*\Z")


def without_trace(text: str) -> str:
    """ClickHouse's error `text` without the stack trace it carries, its code's name (last) kept."""
    head, found, rest = text.partition(STACK_TRACE)
    if not found:
        return text
    name = CODE_NAME.search(rest)
    return head.rstrip(" ,\n") + (f" ({name[1]})" if name else "")


def classify(exc: BaseException) -> StorageError:
    """Wrap `exc` in the StorageError subclass that says how to react to it."""
    if isinstance(exc, StorageError):
        return exc
    message = without_trace(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OperationalError) and (unreachable := UNREACHABLE.search(str(exc))):
        host, port, reason = unreachable.groups()
        return RetryableStorageError(f"cannot connect to {host}:{port}: {reason.strip().lower()}")
    code = getattr(exc, "code", None) if isinstance(exc, Error) else None
    if code is not None:
        return by_code(code, message)
    if isinstance(exc, OperationalError | OSError | TimeoutError):
        return RetryableStorageError(message)
    if isinstance(exc, DatabaseError) and (status := HTTP_STATUS.search(str(exc))):
        passing = int(status[1]) >= 500 or int(status[1]) in RETRY_STATUSES
        return RetryableStorageError(message) if passing else HaltStorageError(message)
    if isinstance(exc, UnicodeDecodeError | json.JSONDecodeError):
        # An answer that is not ClickHouse's (a proxy's page with status 200) read as its JSON or text, as a
        # stream of rows cut or garbled is (the driver's StreamFailureError, an OperationalError). Clients
        # store.client makes refuse such a page before (failed_answer); a bare driver's meets it here.
        return RetryableStorageError(message)
    if isinstance(exc, DataError | UnicodeEncodeError | OverflowError):
        # Raised while encoding the block on this side: the rows themselves are bad.
        return RejectedDataError(message)
    # Anything else raised on this side (a closed client, a column the table
    # lacks, a bug) says nothing about the rows: never dead-letter for it.
    return HaltStorageError(message)


@contextmanager
def classified() -> Iterator[None]:
    """Every failure inside leaves as a StorageError subclass; none is swallowed."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        raise classify(exc) from exc
