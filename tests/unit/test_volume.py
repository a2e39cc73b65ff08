"""The embedded store's filesystem as `eventpipe up`'s worker reports it, for the disk alerts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry

from eventpipe.stack.volume import AVAILABLE, FILES, FILES_FREE, SIZE, Volume


def test_it_reports_what_df_reports_for_the_stores_filesystem(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(Volume(tmp_path))
    usage = shutil.disk_usage(tmp_path)
    assert registry.get_sample_value(SIZE) == usage.total
    free = registry.get_sample_value(AVAILABLE)
    # Free to this user (statvfs' f_bavail), as ClickHouse counts its own: what others wrote meanwhile aside.
    assert free is not None and abs(free - os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize) < 64 << 20
    assert 0 < free <= usage.total
    # And its files, as `df -i` counts them: the inode alert's reading.
    files, files_free = registry.get_sample_value(FILES), registry.get_sample_value(FILES_FREE)
    assert files == os.statvfs(tmp_path).f_files
    assert files_free is not None and files is not None and 0 <= files_free <= files
    assert abs(files_free - os.statvfs(tmp_path).f_favail) < 10_000


def test_a_store_not_there_reports_nothing_rather_than_an_empty_disk(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(Volume(tmp_path / "not-yet"))
    assert registry.get_sample_value(SIZE) is None and registry.get_sample_value(AVAILABLE) is None
