"""One way to reach ClickHouse: the DSN alone picks a server (http://) or chDB (chdb://)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.httpclient import HttpClient
from urllib3.util import Retry, Timeout

from eventpipe.errors import ConfigError, StorageError
from eventpipe.redaction import redact
from eventpipe.store import dsn as dsns
from eventpipe.store.failure import classified, failed_answer

# The disk BACKUP and RESTORE write to and read from (store.backup): on a
# server, clickhouse/config.d declares it; the embedded engine gets it below.
BACKUP_DISK = "backups"
# The driver's first queries (the server's version and settings) answer in milliseconds: a server silent for
# longer is not going to answer, and `migrate`, `worker` and `api` waited their whole read timeout (61 s)
# before saying so.
FIRST_CONTACT_S = 15
ONE_PROCESS = (
    "one process at a time may open an embedded store: is `eventpipe up`, or another eventpipe command, "
    "running on it? Its own error, if any, is the line before"
)
# How the engine says it could not start with no cause given, as for a store another process holds: a cause
# it gives (a file where the store's folder goes, a folder not writable) is no other process's doing.
UNTOLD = re.compile(r"Error initializing EmbeddedServer: \.(\s|$)")
# The driver names the store with the engine options this module gave it (`/data?storage_configuration…`):
# a line of URL-encoded settings between the operator and the path they gave.
OPTIONS = re.compile(r"(Unable to open the chdb engine at '[^'?]*)\?[^']*'")


def connect(dsn: str, timeout_s: int = 60) -> Client:
    """Open a client for `dsn`, raising a classified StorageError if that fails; a server's answer is
    waited for `timeout_s` at most."""
    # Settings check it too, but a DSN given on a command line (`restore --clickhouse-dsn`) comes here
    # alone, and the driver's errors about a misread URL quote the part they misread: a password, maybe.
    found = dsns.problem(dsn)
    if found is not None:
        raise ConfigError(f"ClickHouse DSN: {found}")
    dsn = dsn.strip()
    scheme = urlsplit(dsn).scheme
    if scheme == "chdb":
        try:
            with classified():
                return clickhouse_connect.get_client(dsn=dsn, chdb_options=engine_options(dsn))
        except StorageError as exc:
            said = OPTIONS.sub(r"\1'", str(exc))
            # The engine's cause goes to stderr alone: its error says "Error initializing EmbeddedServer: ."
            # for a store another process holds, which a chdb:// DSN into a running `up` met.
            raise type(exc)(said if UNTOLD.search(said) is None else f"{said} ({ONE_PROCESS})") from exc
    with classified():
        # No server session: each insert and query stands alone, so concurrent
        # calls never trip over a locked session and read-only users work.
        # The interface from the scheme: the driver takes TLS from the port alone (443, 8443), and sent an
        # https:// DSN's password in plain text to :8123.
        reach_s = min(5, timeout_s)
        client = clickhouse_connect.get_client(
            dsn=dsn,
            interface=scheme.lower(),
            autogenerate_session_id=False,
            # A query's parameters in the request's body, never its URL: the driver put those of 4 KB or less
            # in the URL (a user id a page filters by, an erasure's), which a proxy in front of the server, or
            # the server itself at trace level, writes into its access log.
            form_encode_query_params=True,
            connect_timeout=reach_s,
            send_receive_timeout=min(timeout_s, FIRST_CONTACT_S),
        )
    if isinstance(client, HttpClient):
        # The wait for the statements to come, once the server has answered the driver's first queries.
        client._backend.timeout = Timeout(connect=reach_s, read=timeout_s)
        # A redirect is not followed but answered as the driver's error for its status: urllib3 sent an
        # insert on with its body, a stream already read, empty, and a 200 there was taken for a stored
        # batch. The driver's one retry of a failed connection stays.
        client.http_retries = Retry(total=1, redirect=False)  # type: ignore[assignment]  # urllib3 takes a Retry
        _raise_late_failures(client)
    return client


def _raise_late_failures(client: HttpClient) -> None:
    """Every answer read whole (an insert's, a command's) is checked for a failure written after its 200.

    The driver asks for progress headers, which hold a long statement (an insert, a migration's copy: minutes
    at 100M events) past the read timeout; once they have gone out, ClickHouse can only write a later failure
    into the body (the HTTP interface's "response codes caveats"). The driver reads that block in a query's
    row stream, but never in an insert's answer, and a command returns it as its value, which no caller
    reads: a batch was acked though nothing was stored, and a failed copy looked done and was swapped in.
    A proxy's own page with status 200 went through the same way."""
    backend = client._backend
    request = backend.request

    def checked(*args: Any, **kwargs: Any) -> Any:
        response = request(*args, **kwargs)
        if kwargs.get("stream"):
            return response  # a row stream: the driver raises the block itself as it reads
        failure = failed_answer(response.headers, response.data)
        if failure is not None:
            raise failure
        return response

    setattr(backend, "request", checked)  # noqa: B010 - a method, replaced on this client only


def embedded_path(dsn: str) -> Path | None:
    """The directory of the embedded engine a chdb:// DSN names, links resolved; None for a server, memory, or
    a DSN that cannot be read (connect() refuses it without quoting it: urllib's error quotes its password)."""
    try:
        parts = urlsplit(dsn.strip())
    except ValueError:
        return None
    if parts.scheme != "chdb":
        return None
    # Read as clickhouse-connect reads it: chdb://memory/db names a location, chdb:///abs/path a path.
    location = parts.netloc.rpartition("@")[2] if parts.netloc else parts.path
    if location in ("", "memory", ":memory:"):
        return None
    return Path(os.path.realpath(location))


def backup_dir(dsn: str) -> Path | None:
    """Where the embedded engine of a chdb:// DSN keeps its backups: `backups/` beside its directory,
    so `<data dir>/backups` for `eventpipe up`'s `<data dir>/clickhouse`. None for a server or memory."""
    path = embedded_path(dsn)
    return None if path is None else path.parent / BACKUP_DISK


def engine_options(dsn: str) -> dict[str, str]:
    """Startup options of the embedded engine: the backups disk a server gets from its config.d.

    chDB starts its one engine per process with the options of the first
    connection and ignores those of later ones, so every connection passes the
    same options, derived from the DSN alone.
    """
    directory = backup_dir(dsn)
    if directory is None:
        return {}
    return {
        f"storage_configuration.disks.{BACKUP_DISK}.type": "local",
        f"storage_configuration.disks.{BACKUP_DISK}.path": f"{directory}/",
        "backups.allowed_disk": BACKUP_DISK,
    }


@contextmanager
def reaching(dsn: str, variable: str) -> Iterator[None]:
    """ClickHouse failures inside, prefixed with the server and the setting it came from: the API has two
    DSNs, and "OperationalError: Error HTTPConnectionPool..." did not say which one was wrong."""
    try:
        yield
    except StorageError as exc:
        raise type(exc)(f"{named(dsn, variable)}: {exc}") from exc


def named(dsn: str, variable: str) -> str:
    """The store of `dsn` as failures name it: where, password redacted, and the setting to fix."""
    return f"ClickHouse at {redact(dsn)} ({variable})"
