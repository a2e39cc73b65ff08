"""How `up` finds that its Mosquitto could not write the save it asked for, in the broker's own words."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventpipe.stack.child import ChildProcess
from eventpipe.stack.save import Save

# Lines Mosquitto 2.0.11 and 2.1.2 (Debian sid's build, run here) logged for saves they could not write:
# 2.0 ends each failure with "Error: <strerror>.", 2.1 never writes that line.
LOGGED = [
    # 2.0.11, its save's file a directory
    (b"1796000000: Error: Is a directory.", "Is a directory."),
    # 2.1.2, a directory where its save is written
    (
        b"1796564489: Error saving in-memory database, unable to remove stale tmp file "
        b"/data/mosquitto/data//mosquitto.db.new, error Is a directory",
        "Is a directory.",
    ),
    # 2.1.2, on a full disk
    (
        b"1796564491: Error saving in-memory database, unable to flush /data/mosquitto/data//mosquitto.db.new, "
        b"error No space left on device",
        "No space left on device.",
    ),
    # 2.1.2, its save's file a directory: the rename fails (file_common.c puts two spaces before "tmp file")
    (
        b"1796564500: Error saving in-memory database, unable to replace /data/mosquitto/data//mosquitto.db by "
        b"tmp file  /data/mosquitto/data//mosquitto.db.new, error Is a directory",
        "Is a directory.",
    ),
    # 2.1.2, a write that failed part way (persist_write.c)
    (
        b"1796564501: Error during saving in-memory database /data/mosquitto/data//mosquitto.db: "
        b"No space left on device.",
        "No space left on device.",
    ),
]


@pytest.mark.parametrize(("line", "reason"), LOGGED)
def test_a_failed_save_is_found_in_the_log_of_mosquitto_2_0_and_2_1(tmp_path: Path, line: bytes, reason: str) -> None:
    save = Save(ChildProcess("mosquitto", 1883, tmp_path), tmp_path, "mosquitto")
    saving = b"1796564488: Saving in-memory database to /data/mosquitto/data//mosquitto.db.\n"
    (tmp_path / "mosquitto.log").write_bytes(saving + line + b"\n")
    assert save._error([0, 0]) == reason


def test_a_save_that_succeeds_is_no_error(tmp_path: Path) -> None:
    save = Save(ChildProcess("mosquitto", 1883, tmp_path), tmp_path, "mosquitto")
    (tmp_path / "mosquitto.log").write_bytes(
        b"1796564488: Saving in-memory database to /data/mosquitto/data//mosquitto.db.\n"
        b"1796564488: Client w [127.0.0.1:5] disconnected: Error saving in-memory database, x, error y\n"
    )
    assert save._error([0, 0]) is None
