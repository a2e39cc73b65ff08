"""A backup attached read-only as a database of its own, through ClickHouse's Backup database engine:
whether it is on the disk and can be read, and what it holds.

What a backup holds is read back from the backup itself, never counted on the
live tables that ingest keeps changing: `events` is what a restore brings
back, counted as reads count (FINAL, without eventpipe's probes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error

from eventpipe.errors import BackupError
from eventpipe.events.contract import PROBE_EVENT_TYPE
from eventpipe.store.failure import classified
from eventpipe.store.integrity import DAMAGED_CODES, reading_back
from eventpipe.store.naming import literal, on_disk
from eventpipe.store.query import quoted
from eventpipe.store.scratch import new_scratch

BACKUP_NOT_FOUND = 599
POCO_EXCEPTION = 1000
log = logging.getLogger("eventpipe")

EVENTS_HELD = f"SELECT count() FROM {{db}}.events FINAL WHERE event_type != '{PROBE_EVENT_TYPE}'"  # noqa: S608
DEAD_LETTERS_HELD = "SELECT count() FROM {db}.dead_letters FINAL"
HELD = (EVENTS_HELD, DEAD_LETTERS_HELD)


class _Missing(BackupError):
    """No backup of that name on the disk: told apart from one there but unreadable."""


def held(client: Client, name: str, database: str) -> tuple[int, int]:
    """(events, dead letters) in the backup; BackupError if it is not there or holds another database."""
    with opened(client, name, database) as attached:
        return counted(client, name, database, attached)


def counted(client: Client, name: str, database: str, attached: str) -> tuple[int, int]:
    """(events, dead letters) in backup `name`, attached as the database `attached`."""
    with classified():
        listed = client.query(
            "SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": attached}
        ).result_rows
    if not {"events", "dead_letters"} <= {row[0] for row in listed}:
        raise BackupError(
            f"backup {name} holds no eventpipe tables of the database {database!r}: "
            "a backup restores into a database of the name it was taken from"
        )
    # A file of a part gone or cut short: the backup's fault, not a passing one of the server's.
    with reading_back(name):
        counts = [client.query(query.format(db=quoted(attached))).result_rows[0][0] for query in HELD]
    return int(counts[0]), int(counts[1])


def present(client: Client, name: str, database: str) -> bool:
    try:
        with opened(client, name, database):
            return True
    except _Missing:
        return False
    except BackupError as exc:
        log.warning("backup %s is in the catalog but left out of the list: %s", name, exc)
        return False


@contextmanager
def opened(client: Client, name: str, database: str) -> Iterator[str]:
    """The backup attached read-only as a database of its own, dropped afterwards."""
    scratch = new_scratch()
    engine = f"Backup({literal(database)}, {on_disk(name)})"
    try:
        client.command(f"CREATE DATABASE {quoted(scratch)} ENGINE = {engine}")
    except Error as exc:
        code = getattr(exc, "code", None)
        if code == BACKUP_NOT_FOUND:
            raise _Missing(f"no backup named {name} on the backups disk") from exc
        # A `.backup` file empty or cut short (one the disk had no room for) fails its XML parse, 1000
        # like a network error, so it is told apart by its text.
        if code in DAMAGED_CODES or (code == POCO_EXCEPTION and "SAXParseException" in str(exc)):
            first = str(exc).strip().splitlines()[0][:300]
            raise BackupError(f"backup {name} cannot be read: damaged or cut short ({first})") from exc
        with classified():
            raise
    try:
        yield scratch
    finally:
        with classified():
            client.command(f"DROP DATABASE IF EXISTS {quoted(scratch)}")
