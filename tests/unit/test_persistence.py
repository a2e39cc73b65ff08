"""What `up` says of a broker persistence file that is no whole save, and the remedy it gives, run as given."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest

from eventpipe.stack import persistence, snapshot

DATA = Path(__file__).parent / "data" / "mosquitto-2.0.11"
WHOLE = (DATA / "whole.db").read_bytes()
CUT = (DATA / "disk-full.db").read_bytes()  # what 2.0.11 renamed into place when its disk filled
WRITTEN = time.mktime((2026, 12, 5, 23, 28, 52, 0, 0, -1))  # local time, as the name set aside gives it


def placed(directory: Path, content: bytes, name: str = "mosquitto.db") -> Path:
    path = directory / name
    path.write_bytes(content)
    os.utime(path, (WRITTEN, WRITTEN))
    return path


def test_a_cut_save_is_refused_naming_the_file_its_size_the_cut_what_is_lost_and_the_remedy(tmp_path: Path) -> None:
    path = placed(tmp_path, CUT)
    cut = persistence.examine(path)
    assert cut is not None
    assert cut.offset == snapshot.cut_at(CUT) == 12_259
    said = cut.refusal()
    assert said.startswith(
        f"{path} (12,288 bytes), the file the MQTT broker saves its queue in, is cut short at byte 12,259: "
    )
    assert "The broker's queue of acknowledged events in it is partly lost" in said
    assert "the events queued after the cut are not in it" in said
    assert f"Free space on the disk of {tmp_path} first" in said
    assert said.endswith(
        "move the file aside to start with an empty queue, keeping it for inspection: "
        f"mv {path} {tmp_path}/mosquitto.db.cut-20261205-232852"
    ), said


def test_the_command_given_moves_the_file_aside_whatever_its_path(tmp_path: Path) -> None:
    directory = tmp_path / "data dir's $HOME"
    directory.mkdir()
    path = placed(directory, CUT)
    cut = persistence.examine(path)
    assert cut is not None
    subprocess.run(["sh", "-c", cut.command], check=True)
    assert not path.exists()
    assert (directory / "mosquitto.db.cut-20261205-232852").read_bytes() == CUT, "kept, whole, for inspection"


def test_an_empty_file_is_cut_at_its_start(tmp_path: Path) -> None:
    # What a save onto a disk already full leaves when it fits stdio's buffer: 2.0.11 starts on it empty.
    cut = persistence.examine(placed(tmp_path, b""))
    assert cut is not None and (cut.size, cut.offset) == (0, 0)
    assert " (0 bytes), the file the MQTT broker saves its queue in, is cut short at byte 0: " in cut.refusal()


def test_bytes_that_are_no_save_are_refused_with_the_remedy_alone(tmp_path: Path) -> None:
    path = placed(tmp_path, bytes(4096))  # what a crash can leave of a file the disk had not written
    cut = persistence.examine(path)
    assert cut is not None and cut.offset is None
    said = cut.refusal()
    assert said.startswith(f"{path} (4,096 bytes), the file the MQTT broker saves its queue in, is not a Mosquitto ")
    assert "Mosquitto refuses to start on it" in said and "Free space" not in said, said
    assert said.endswith(f"mv {path} {tmp_path}/mosquitto.db.not-a-save-20261205-232852"), said


def test_a_whole_save_and_no_save_at_all_pass(tmp_path: Path) -> None:
    assert persistence.examine(placed(tmp_path, WHOLE)) is None
    assert persistence.examine(tmp_path / "absent.db") is None
    # Left to the broker, whose error names it (its save cannot be written there).
    (tmp_path / "directory.db").mkdir()
    assert persistence.examine(tmp_path / "directory.db") is None


def test_another_format_is_left_to_the_broker_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Mosquitto 2.0.11 starts on a save of format 5 (1.x's): refusing it would stop an upgrade.
    path = placed(tmp_path, WHOLE[:19] + (5).to_bytes(4, "big") + WHOLE[23:])
    with caplog.at_level(logging.WARNING):
        assert persistence.examine(path) is None
    assert f"{path} is a Mosquitto persistence file of format 5, not 6" in caplog.text
    assert "not checked for a save cut short" in caplog.text


def test_a_large_save_is_mapped_not_read(tmp_path: Path) -> None:
    """A queue of 50,000 messages (6.5 MB) is looked at in less than a megabyte of memory: a save of 60 KB
    events reached 3 GB."""
    chunks = list(snapshot.chunks(WHOLE))
    stores = [chunk for chunk in chunks if chunk.kind == snapshot.MSG_STORE]
    queued = [chunk for chunk in chunks if chunk.kind == snapshot.CLIENT_MSG]
    client = next(chunk for chunk in chunks if chunk.kind == snapshot.CLIENT)
    path = tmp_path / "mosquitto.db"
    with path.open("wb") as out:  # the same 100 messages again and again: their ids are not looked at
        out.write(WHOLE[: stores[0].offset])
        out.write(WHOLE[stores[0].offset : stores[-2].end] * 500)
        out.write(WHOLE[stores[-1].offset : client.end])
        out.write(WHOLE[queued[0].offset : queued[-1].end] * 500)
        out.write(WHOLE[queued[-1].end :])
    size = path.stat().st_size
    os.truncate(path, size - 10)
    tracemalloc.start()
    try:
        cut = persistence.examine(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cut is not None and size - 200 < (cut.offset or 0) < size - 10
    assert peak < 1 << 20, peak
