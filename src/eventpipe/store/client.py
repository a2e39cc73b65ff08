"""One way to reach ClickHouse: the DSN alone picks a server (http://) or chDB (chdb://)."""

from __future__ import annotations

from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from eventpipe.errors import ConfigError
from eventpipe.redaction import redact
from eventpipe.store.failure import classified

SCHEMES = ("http", "https", "chdb")


def connect(dsn: str, timeout_s: int = 60) -> Client:
    """Open a client for `dsn`, raising a classified StorageError if that fails; a server's answer is
    waited for `timeout_s` at most."""
    scheme = urlsplit(dsn).scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"ClickHouse DSN must start with http://, https:// or chdb://, got {redact(dsn)!r}")
    with classified():
        if scheme == "chdb":
            return clickhouse_connect.get_client(dsn=dsn)
        # No server session: each insert and query stands alone, so concurrent
        # calls never trip over a locked session and read-only users work.
        return clickhouse_connect.get_client(
            dsn=dsn, autogenerate_session_id=False, connect_timeout=5, send_receive_timeout=timeout_s
        )


def ping(client: Client) -> bool:
    """True when the server answers a trivial query; any failure is the answer "no"."""
    try:
        return bool(client.command("SELECT 1") == 1)
    except Exception:  # noqa: BLE001 - the caller reports "not ready"; nothing is lost here
        return False
