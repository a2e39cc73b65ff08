"""The embedded store of a data dir, and its backups, readable by their user only.

Made under the umask, `<data dir>/clickhouse` and `<data dir>/backups` were
0755 with files 0644: any local user read event and user ids out of a backup,
erased users' among them, with none of the API's keys. A
server keeps its files to its own user; these are made so too, by `eventpipe
up` at every start and by `eventpipe restore` on a data dir. Only these two,
which eventpipe owns: a chdb:// DSN given by hand names a directory its
operator chose, whose rights are theirs to set.
"""

from __future__ import annotations

from pathlib import Path

from eventpipe.errors import ConfigError
from eventpipe.store.client import BACKUP_DISK
from eventpipe.store.dsn import EMBEDDED_STORE


def private_store(data_dir: Path) -> None:
    """`<data dir>/clickhouse` and `<data dir>/backups` made, or set, 0700."""
    for directory in (data_dir / EMBEDDED_STORE, data_dir / BACKUP_DISK):
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)  # one made before this, or loosened since
        except OSError as exc:
            raise ConfigError(
                f"cannot make {directory} private to this user: {exc.strerror} (--data-dir, or EVENTPIPE_DATA_DIR)"
            ) from None
