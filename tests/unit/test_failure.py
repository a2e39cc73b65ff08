"""ClickHouse failures sorted into retry, dead-letter and halt."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError, ProgrammingError

from eventpipe.errors import HaltStorageError, RejectedDataError, RetryableStorageError, UnknownStorageError
from eventpipe.store.failure import classify


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
