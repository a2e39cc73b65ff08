"""ClickHouse DSNs: the scheme picks a server (http://, https://) or the embedded engine (chdb://)."""

from __future__ import annotations

from pathlib import Path

from eventpipe.errors import ConfigError
from eventpipe.redaction import url_problem

SCHEMES = ("http", "https", "chdb")


def problem(dsn: str) -> str | None:
    """Why `dsn` is no ClickHouse DSN, without quoting it (it may hold a password); None when it is one."""
    return url_problem(dsn, SCHEMES)


def embedded(dsn: str) -> bool:
    """Whether `dsn` names the embedded engine, whose store one process alone can open."""
    return dsn.strip().startswith("chdb://")


# The embedded engine's directory in a data dir.
EMBEDDED_STORE = "clickhouse"


def embedded_dsn(data_dir: Path) -> str:
    """The embedded engine's DSN inside a data dir: where `eventpipe up --data-dir` keeps its events."""
    path = (data_dir / EMBEDDED_STORE).resolve()
    if set(str(path)) & set("?#"):
        # The driver reads the DSN as a URL and does not decode its path: `d#x` put the store in `d`,
        # outside the data dir and its rights, and `d?q` shared it with `d#x`.
        raise ConfigError(
            f"the data dir {data_dir} holds '?' or '#', which end the embedded engine's path: "
            "choose another (--data-dir, or EVENTPIPE_DATA_DIR)"
        )
    return f"chdb://{path}"
