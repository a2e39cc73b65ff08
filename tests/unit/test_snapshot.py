"""Telling a cut Mosquitto save from a whole one, on files Mosquitto 2.0.11 (Debian 12's) wrote.

tests/unit/data/mosquitto-2.0.11/ (made by tests/unit/data/mosquitto-2.0.11/make.py):
- whole.db: a save of 100 QoS 1 messages queued for an offline persistent session `worker-1` subscribed to
  two filters, every third with a user property, and one retained message;
- disk-full.db: the file 2.0.11 renamed over its last whole save when the disk (a tmpfs) filled during
  the save, in the queued messages' part; 2.0.11 then refuses to start on it ("Couldn't open database").
"""

from __future__ import annotations

import itertools
import mmap
from collections import Counter
from pathlib import Path

import pytest

from eventpipe.stack import snapshot
from eventpipe.stack.snapshot import CFG, CLIENT, CLIENT_MSG, HEADER_BYTES, MSG_STORE, RETAIN, SUB, NotASave

DATA = Path(__file__).parent / "data" / "mosquitto-2.0.11"
WHOLE = (DATA / "whole.db").read_bytes()
CUT = (DATA / "disk-full.db").read_bytes()
CHUNKS = list(snapshot.chunks(WHOLE))


def test_a_whole_save_is_whole_and_in_the_writers_order() -> None:
    assert snapshot.cut_at(WHOLE) is None
    assert Counter(chunk.kind for chunk in CHUNKS) == {
        CFG: 1,
        MSG_STORE: 101,
        CLIENT: 1,
        CLIENT_MSG: 100,
        SUB: 2,
        RETAIN: 1,
    }
    assert [chunk.kind for chunk in CHUNKS[:2]] == [CFG, MSG_STORE]
    assert [chunk.kind for chunk in CHUNKS[-4:]] == [CLIENT_MSG, SUB, SUB, RETAIN]
    assert CHUNKS[0].offset == HEADER_BYTES
    assert all(before.end == after.offset for before, after in itertools.pairwise(CHUNKS))
    assert CHUNKS[-1].end == len(WHOLE)
    assert snapshot.subscribers(WHOLE) == {b"worker-1"}


def cuts() -> list[int]:
    """Offsets to cut the whole save at: each byte of the header and the first chunks, and at and around
    each chunk's start (its header, its fixed part) and end."""
    near = {chunk.offset + step for chunk in CHUNKS for step in (-1, 0, 1, 4, 7, 8, 9, 20, 30, chunk.length // 2)}
    return sorted({*range(CHUNKS[3].end), *(offset for offset in near if 0 <= offset < len(WHOLE))})


def test_a_cut_inside_a_chunk_is_found_at_that_chunk_and_one_between_two_is_not() -> None:
    starts = {chunk.offset: chunk for chunk in CHUNKS}
    for offset in cuts():
        found = snapshot.cut_at(WHOLE[:offset])
        if offset < HEADER_BYTES:
            assert found == 0, offset
        elif offset == HEADER_BYTES:
            assert found == HEADER_BYTES, offset  # the header alone: no CFG chunk
        elif offset in starts:
            assert found is None, offset  # no trailer: this reads as whole
        else:
            (within,) = [chunk for chunk in CHUNKS if chunk.offset < offset < chunk.end]
            assert found == within.offset, offset


def test_a_cut_between_two_chunks_before_the_subscriptions_leaves_the_worker_none() -> None:
    first_sub = next(chunk.offset for chunk in CHUNKS if chunk.kind == SUB)
    for chunk in CHUNKS[1:]:
        held = snapshot.subscribers(WHOLE[: chunk.offset])
        assert held == (set() if chunk.offset <= first_sub else {b"worker-1"}), chunk.offset


def test_the_file_mosquitto_renamed_into_place_on_a_full_disk_is_cut_in_its_queue() -> None:
    found = snapshot.cut_at(CUT)
    assert found is not None
    assert len(CUT) % 4096 == 0  # where the filesystem ran out of pages
    prefix = list(snapshot.chunks(CUT))
    assert prefix == CHUNKS[: len(prefix)]  # the same save as far as it went, to a whole chunk
    assert found == prefix[-1].end < len(CUT)
    assert prefix[-1].kind == CLIENT_MSG
    assert snapshot.subscribers(CUT) == set()


def test_an_empty_file_is_cut_at_its_start() -> None:
    # What a save onto a disk already full renames into place when the whole save fits stdio's buffer
    # (Mosquitto 2.0.11 then starts on it, empty, with only a warning).
    assert snapshot.cut_at(b"") == 0
    assert snapshot.cut_at(WHOLE[:7]) == 0


@pytest.mark.parametrize(
    "data",
    [b"SQLite format 3\x00" + bytes(100), bytes(64), b"\x00\xb5\x00mosquitto dx" + bytes(40)],
    ids=["another program's", "zeros", "another magic"],
)
def test_bytes_that_are_no_save_are_refused_not_called_cut(data: bytes) -> None:
    with pytest.raises(NotASave, match="not a Mosquitto persistence file"):
        snapshot.cut_at(data)


def test_another_format_version_is_refused() -> None:
    version_5 = WHOLE[:19] + (5).to_bytes(4, "big") + WHOLE[23:]
    with pytest.raises(NotASave, match="format 5, not 6"):
        snapshot.cut_at(version_5)


@pytest.mark.parametrize("kind", [MSG_STORE, CLIENT_MSG])
def test_a_gap_in_the_middle_is_found_near_it(kind: int) -> None:
    """Bytes lost inside the file (a write that failed, then space freed before the next): the chunk that
    runs over the gap may still look whole, the one after it does not."""
    chunk = [chunk for chunk in CHUNKS if chunk.kind == kind][5]
    start = chunk.offset + 8 + 20
    gapped = WHOLE[:start] + WHOLE[start + 4096 :] if kind == MSG_STORE else WHOLE[:start] + WHOLE[start + 100 :]
    found = snapshot.cut_at(gapped)
    assert found is not None
    assert chunk.offset <= found <= chunk.end


def test_a_first_chunk_of_another_platforms_layout_is_left_to_mosquitto() -> None:
    # i386 pads struct PF_cfg to 12 bytes, not 16: every save there would have read as cut at its first chunk.
    cfg = CHUNKS[0]
    narrow = (
        WHOLE[:HEADER_BYTES]
        + (1).to_bytes(4, "big")
        + (12).to_bytes(4, "big")
        + WHOLE[cfg.offset + 8 : cfg.offset + 20]
    )
    with pytest.raises(snapshot.Unfamiliar):
        snapshot.cut_at(narrow + WHOLE[cfg.end :])


def test_chunks_out_of_the_writers_order_are_not_whole() -> None:
    cfg, store = CHUNKS[0], CHUNKS[1]
    swapped = WHOLE[:HEADER_BYTES] + WHOLE[store.offset : store.end] + WHOLE[cfg.offset : cfg.end] + WHOLE[store.end :]
    # Not begun as 2.0 begins a save: another version's or platform's, left to Mosquitto, never refused.
    with pytest.raises(snapshot.Unfamiliar):
        snapshot.cut_at(swapped)
    client_msg = next(chunk for chunk in CHUNKS if chunk.kind == CLIENT_MSG)
    # A queued message of another client than the CLIENT chunk before it.
    renamed = WHOLE[: client_msg.offset + 8 + 16] + b"worker-2" + WHOLE[client_msg.offset + 8 + 16 + 8 :]
    assert snapshot.cut_at(renamed) == client_msg.offset


def test_an_mmap_is_read_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.db"
    path.write_bytes(CUT)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert snapshot.cut_at(mapped) == snapshot.cut_at(CUT)
