"""The data dir's embedded store and its backups: readable by their user only."""

from __future__ import annotations

import stat
from pathlib import Path

from eventpipe.stack.permission import private_store


def test_the_store_and_its_backups_are_made_or_set_0700(tmp_path: Path) -> None:
    # Made under the umask they were 0755, files 0644: a local user read user ids out of a backup.
    (tmp_path / "backups").mkdir(mode=0o755)  # made by an earlier version, or loosened since
    private_store(tmp_path)
    for name in ("clickhouse", "backups"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o700, name
