"""The database a server's DSN names, created before the migrations that make tables inside it.

The migrations create tables in the DSN's database, so it must exist first.
The DSN's own user creates it (the migrator is allowed exactly that, in
clickhouse/users.d). The embedded engine (chdb://) and a DSN without a
database need nothing.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from clickhouse_connect.driver.client import Client

from eventpipe.errors import ConfigError
from eventpipe.store.client import connect
from eventpipe.store.failure import classified

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def named_database(dsn: str) -> tuple[str, str] | None:
    """(the DSN without its database, the database) of an http(s) DSN with one; None otherwise."""
    parts = urlsplit(dsn)
    database = parts.path.strip("/")
    if parts.scheme not in ("http", "https") or not database:
        return None
    if not NAME.fullmatch(database):
        # Never quoted into a statement: a name that would need quoting is refused before anything connects.
        raise ConfigError(
            f"database name {database[:80]!r} in EVENTPIPE_CLICKHOUSE_DSN: use letters, digits and '_', "
            "not starting with a digit"
        )
    return urlunsplit(parts._replace(path="")), database


def create_database(dsn: str) -> str | None:
    """CREATE DATABASE IF NOT EXISTS for the database `dsn` names; returns its name, or None when there is none."""
    found = named_database(dsn)
    if found is None:
        return None
    server, database = found
    client = connect(server)
    try:
        create(client, database)
    finally:
        client.close()
    return database


def create(client: Client, database: str) -> None:
    """Create `database` unless it exists; `database` must be a plain name (named_database checks it)."""
    if not NAME.fullmatch(database):
        raise ConfigError(f"not a plain database name: {database[:80]!r}")
    with classified():
        client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
