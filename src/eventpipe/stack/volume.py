"""Room on the filesystem of `eventpipe up`'s embedded store, as Prometheus gauges.

A ClickHouse server reports the room on its data path itself
(ClickHouseAsyncMetrics_FilesystemMainPath*), which the disk alerts watch; the
embedded engine reports nothing, so in `eventpipe up` those alerts were loaded
and could never fire (found by a new user's walkthrough), while a full disk
stops its ingest just as it stops a server's. The alerts read these too. Read
at each scrape: one statvfs call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

AVAILABLE = "eventpipe_store_filesystem_avail_bytes"
SIZE = "eventpipe_store_filesystem_size_bytes"
# Files (inodes) run out apart from bytes: with none left an insert fails as on a full disk while `df -h`
# shows room (an attack, on an ext4 made with 2,000 inodes). A filesystem that counts none reports 0.
FILES_FREE = "eventpipe_store_filesystem_files_free"
FILES = "eventpipe_store_filesystem_files"


class Volume(Collector):
    """The filesystem that holds `path`: bytes free to its user and its size, as `df` reports them, and its
    files (inodes) free and in all, as `df -i` does."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def collect(self) -> Iterator[Metric]:
        try:
            stats = os.statvfs(self._path)
        except OSError:
            return  # not there (yet): no sample, rather than a made-up one the alerts would read
        yield GaugeMetricFamily(
            AVAILABLE,
            "Bytes free to eventpipe on the filesystem of the embedded store (`eventpipe up` only; a ClickHouse "
            "server reports ClickHouseAsyncMetrics_FilesystemMainPathAvailableBytes).",
            value=stats.f_bavail * stats.f_frsize,
        )
        yield GaugeMetricFamily(
            SIZE,
            "Size of the filesystem of the embedded store (`eventpipe up` only).",
            value=stats.f_blocks * stats.f_frsize,
        )
        yield GaugeMetricFamily(
            FILES_FREE,
            "Files (inodes) free to eventpipe on the filesystem of the embedded store (`eventpipe up` only; a "
            "ClickHouse server reports ClickHouseAsyncMetrics_FilesystemMainPathAvailableINodes).",
            value=stats.f_favail,
        )
        yield GaugeMetricFamily(
            FILES, "Files (inodes) of the filesystem of the embedded store (`eventpipe up` only).", value=stats.f_files
        )
