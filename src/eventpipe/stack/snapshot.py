"""Mosquitto 2.0's persistence file (format 6): whether a save is whole or was cut short.

Mosquitto 2.0.0 to 2.0.22 (src/persist_write.c, persist__backup) write `mosquitto.db.new` and rename it over
`mosquitto.db` even when the write failed after the message store: the results of persist__client_save,
persist__subs_save_all and persist__retain_save_all, and of fflush, fsync and fclose, go unchecked. A disk
that fills during a save so puts a cut file in place of the last whole one. 2.0.11 on a tmpfs that filled
did so logging "Error: No space left on device." (a write failed in the queued messages), or nothing at all
(only the last flush failed); onto a disk already full, with a small state, it put an empty file in place.
On the next start (src/persist_read.c, persist__restore) 2.0.11 refuses ("Error: Couldn't open database.")
when the cut falls inside a chunk's body or the file's header, and starts without a word on the chunks it
read when the cut falls right after a chunk or inside a chunk's 8-byte header, so with the worker's session
and part of its queue (111 of 3,000 messages from one such file); on an empty file it starts empty, with a
warning. 2.1.0 checks every step (commit 621d74fd, libcommon/file_common.c mosquitto_write_file).

The format (src/persist.h, persist_write_v5.c; integers big-endian but for the 8-byte ids and times):

    header   15-byte magic, 4-byte CRC (always written 0, never read), 4-byte version (6)
    chunks   type (4 bytes), length (4 bytes) of the body that follows, the body

in the order persist__backup writes them: one CFG, every MSG_STORE, each persistent client's CLIENT followed
by its CLIENT_MSGs, every SUB, every RETAIN. There is no trailer and no checksum: a file cut right after a
whole chunk reads as a whole one (its SUB chunks, written after every queued message, are then missing).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TypeAlias

# What a save is read from: its bytes, or the file mapped (only chunk headers and fixed parts are read).
Data: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

MAGIC: Final = b"\x00\xb5\x00mosquitto db"
VERSION: Final = 6
HEADER_BYTES: Final = len(MAGIC) + 4 + 4
CHUNK_HEADER_BYTES: Final = 8

CFG, MSG_STORE, CLIENT_MSG, RETAIN, SUB, CLIENT = 1, 2, 3, 4, 5, 6
NAMES: Final = {
    CFG: "CFG",
    MSG_STORE: "MSG_STORE",
    CLIENT_MSG: "CLIENT_MSG",
    RETAIN: "RETAIN",
    SUB: "SUB",
    CLIENT: "CLIENT",
}
# Where each type may come, in the writer's order; a CLIENT_MSG also needs its CLIENT just before.
_RANK: Final = {CFG: 0, MSG_STORE: 1, CLIENT: 2, CLIENT_MSG: 2, SUB: 3, RETAIN: 4}
# The fixed part of each body: sizeof(struct PF_*) on x86-64 and arm64, padding included.
_FIXED: Final = {CFG: 16, MSG_STORE: 32, CLIENT_MSG: 16, RETAIN: 8, SUB: 12, CLIENT: 24}


@dataclass(frozen=True)
class Chunk:
    offset: int  # of its 8-byte header
    kind: int
    length: int  # of its body
    client_id: bytes | None = None  # CLIENT, CLIENT_MSG and SUB name one

    @property
    def end(self) -> int:
        return self.offset + CHUNK_HEADER_BYTES + self.length


class NotASave(ValueError):
    """The bytes are no Mosquitto format-6 persistence file (another program's, or another format's)."""


class OtherFormat(NotASave):
    """A Mosquitto persistence file of another format than 6: Mosquitto 2.0 still reads those of 1.x (format
    5 and before, 2.0.11 started on one), and this reads none of them, so cannot tell whether it is cut."""


class Unfamiliar(OtherFormat):
    """Format 6 whose first chunk is not laid out as 2.0 on x86-64 and arm64 writes one (another platform's
    struct padding: i386's CFG chunk is 12 bytes, not 16; another version's order). Left to Mosquitto, which
    may read it, rather than refused with a queue it could have served. Past a first chunk read as expected,
    a chunk laid out otherwise is damage (bytes lost inside the file: a write that failed, then space freed
    before the next), and the file is cut there."""


def cut_at(data: Data) -> int | None:
    """None when `data` is a whole save as Mosquitto 2.0 writes one; else the offset where what can be
    trusted ends: the first chunk that is incomplete or not as Mosquitto writes it (0 when the header is).

    An empty file is cut at 0: a save always holds the header and a CFG chunk, and an empty one is what a
    save onto a disk already full leaves. A file cut right after a whole chunk cannot be told from a whole
    one by its format; see `subscribers` for the sign that catches it before the SUB chunks.
    Raises NotASave for bytes of another program (2.0.11 refuses them: "Unrecognised file format"), and its
    OtherFormat for another format version, which Mosquitto may read (those of 1.x) and this does not.
    `data` may be an mmap: only chunk headers and fixed parts are read.
    """
    end = HEADER_BYTES if len(data) >= HEADER_BYTES else 0
    for found in _scan(data):
        if found is None:
            return end
        offset, _kind, length, _client_id = found
        end = offset + CHUNK_HEADER_BYTES + length
    return None


def chunks(data: Data) -> Iterator[Chunk]:
    """The whole chunks of a save, in order, up to its cut if it has one."""
    for chunk in _walk(data):
        if chunk is None:
            return
        yield chunk


def subscribers(data: Data) -> set[bytes]:
    """The client ids with a subscription in the save's whole part. The SUB chunks follow every queued
    message: a session whose client always holds a subscription (the worker's) but has none here was cut
    off before them, even where the cut fell right after a whole chunk."""
    return {chunk.client_id for chunk in chunks(data) if chunk.kind == SUB and chunk.client_id is not None}


def _walk(data: Data) -> Iterator[Chunk | None]:
    """Each whole chunk, then None where the file stops being a whole save (nothing more once it has)."""
    for found in _scan(data):
        yield None if found is None else Chunk(*found)


def _scan(data: Data) -> Iterator[tuple[int, int, int, bytes | None] | None]:
    """`_walk` as (offset, kind, length, client id) tuples: a queue of 5,000,000 messages is 10,000,000
    chunks, and a Chunk made for each took twice as long."""
    size = len(data)
    head = bytes(data[:HEADER_BYTES])
    if len(head) < HEADER_BYTES:
        if not MAGIC.startswith(head[: len(MAGIC)]):
            raise NotASave("not a Mosquitto persistence file (its first bytes are not Mosquitto's magic)")
        yield None
        return
    if head[: len(MAGIC)] != MAGIC:
        raise NotASave("not a Mosquitto persistence file (its first bytes are not Mosquitto's magic)")
    (version,) = struct.unpack_from(">I", head, len(MAGIC) + 4)
    if version != VERSION:
        raise OtherFormat(f"a Mosquitto persistence file of format {version}, not {VERSION} (Mosquitto 2.0 and 2.1)")
    offset, rank, client, count = HEADER_BYTES, -1, None, 0
    while offset < size:
        try:
            found = _chunk(data, offset, size)
            if found is None:
                yield None
                return
            kind, length, client_id = found
            # In the writer's order: CFG first and once, a CLIENT_MSG right within its client's run.
            kind_rank = _RANK[kind]
            if (count == 0) != (kind == CFG) or kind_rank < rank or (kind == CLIENT_MSG and client_id != client):
                raise _unfamiliar(kind, offset)
        except Unfamiliar:
            if count == 0:
                raise
            yield None
            return
        client = client_id if kind in (CLIENT, CLIENT_MSG) else None
        rank, count = kind_rank, count + 1
        yield offset, kind, length, client_id
        offset += CHUNK_HEADER_BYTES + length
    if count == 0:
        yield None  # the header alone: no CFG chunk


_HEADER = struct.Struct(">II")
_MSG_STORE_LENGTHS = struct.Struct(">IHHHH")  # payload, (mid), source id, source username, topic
_ID_LENGTH = struct.Struct(">H")
_SUB_LENGTHS = struct.Struct(">HH")  # client id, topic
_CLIENT_LENGTHS = struct.Struct(">HHH")  # client id, (port), username


def _chunk(data: Data, offset: int, size: int) -> tuple[int, int, bytes | None] | None:
    """The kind, body length and client id of the chunk at `offset` when it is whole and consistent,
    else None."""
    if size - offset < CHUNK_HEADER_BYTES:
        return None
    kind, length = _HEADER.unpack_from(data, offset)
    fixed = _FIXED.get(kind)
    body = offset + CHUNK_HEADER_BYTES
    if fixed is None or size - body < length:
        return None  # runs past the end, or no chunk at all (the zeros a crash leaves): cut here
    if length < fixed:
        raise _unfamiliar(kind, offset)
    client_id = None
    if kind == MSG_STORE:
        payload_len, _mid, source_id_len, source_username_len, topic_len = _MSG_STORE_LENGTHS.unpack_from(
            data, body + 16
        )
        expected = fixed + source_id_len + source_username_len + topic_len + payload_len
        if length < expected or not _properties_fit(data, body + expected, length - expected):
            raise _unfamiliar(MSG_STORE, offset)
        expected = length
    elif kind == CLIENT_MSG:
        (id_len,) = _ID_LENGTH.unpack_from(data, body + 10)
        expected = fixed + id_len
        if length < expected or not _properties_fit(data, body + expected, length - expected):
            raise _unfamiliar(CLIENT_MSG, offset)
        client_id = bytes(data[body + fixed : body + expected])
        expected = length
    elif kind in (CFG, RETAIN):
        expected = fixed
    elif kind == SUB:
        id_len, topic_len = _SUB_LENGTHS.unpack_from(data, body + 4)
        expected = fixed + id_len + topic_len
        client_id = bytes(data[body + fixed : body + fixed + id_len])
    else:  # CLIENT
        id_len, _port, username_len = _CLIENT_LENGTHS.unpack_from(data, body + 14)
        expected = fixed + id_len + username_len
        client_id = bytes(data[body + fixed : body + fixed + id_len])
    if length != expected:
        raise _unfamiliar(kind, offset)
    return kind, length, client_id


def _unfamiliar(kind: int, offset: int) -> Unfamiliar:
    name = NAMES.get(kind, str(kind))
    return Unfamiliar(
        f"a save laid out otherwise than Mosquitto 2.0 on x86-64 writes one (its {name} at byte {offset:,})"
    )


def _properties_fit(data: Data, start: int, length: int) -> bool:
    """MQTT 5 properties as Mosquitto writes them after a message (property__write_all with its length):
    a variable byte integer, then exactly that many bytes; or nothing at all."""
    if length == 0:
        return True
    value, shift = 0, 0
    for index in range(min(4, length)):
        byte = data[start + index]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return index + 1 + value == length
    return False
