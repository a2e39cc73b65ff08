"""The Mosquitto of `eventpipe up`, run for real: it can write its log and persistence, or it does not start."""

from __future__ import annotations

import os
import pwd
import re
import resource
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from eventpipe.errors import BrokerError
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
from eventpipe.port import free_port
from eventpipe.stack import journal as journal_module
from eventpipe.stack import snapshot
from eventpipe.stack.child import port_free
from eventpipe.stack.mosquitto import Mosquitto
from tests.support.disk import full_filesystem
from tests.support.mqtt import publish_raw
from tests.support.services import SESSION_EXPIRY_S, require_mosquitto
from tests.support.wait import wait_until


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


def broker(directory: Path) -> Mosquitto:
    return Mosquitto(free_port(), directory, 100, max_payload_bytes=65_536, session_expiry_s=SESSION_EXPIRY_S)


@pytest.mark.skipif(os.geteuid() != 0, reason="Mosquitto drops to its configured user only when started as root")
def test_the_broker_runs_as_the_user_eventpipe_runs_as_whatever_user_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root after a plain `su`, `sudo -E` or `docker run -e USER=nobody`: the broker dropped to nobody, could
    # write neither its log nor its persistence, and a restart lost 4,075 of 30,000 acknowledged events.
    monkeypatch.setenv("USER", "nobody")
    monkeypatch.setenv("LOGNAME", "nobody")
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.start()
    try:
        assert f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" in (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
        assert b"running" in mosquitto.log_file.read_bytes()
    finally:
        mosquitto.stop()
    assert (tmp_path / "mosquitto" / "data" / "mosquitto.db").exists(), "a stop saves the persistence file"


def test_a_long_log_is_set_aside_at_a_start_and_the_one_before_it_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker appends to its log at every start and never rotates it: a line every 10 s, for good.
    monkeypatch.setattr(journal_module, "LOG_KEEP_BYTES", 2_000)
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    (directory / "mosquitto.log").write_bytes(b"1: old\n" * 400)
    (directory / "mosquitto.log.1").write_bytes(b"1: older\n")
    mosquitto = broker(directory)
    mosquitto.start()
    try:
        assert (directory / "mosquitto.log.1").read_bytes() == b"1: old\n" * 400
        fresh = mosquitto.log_file.read_bytes()
        assert b"running" in fresh and b"old" not in fresh
    finally:
        mosquitto.stop()
    # A short one is kept as it is.
    mosquitto.start()
    mosquitto.stop()
    assert mosquitto.log_file.read_bytes().startswith(fresh)


def test_a_long_log_is_set_aside_while_the_broker_runs_and_its_limits_and_clients_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A producer connecting for each event writes three lines a connection: at 50 a second, 1.9 GB a day
    # into the data dir, set aside only at the next start of `up`. Renamed and reopened on a SIGHUP, the
    # broker's reload took its listener back to QoS 2 and topic aliases (a review).
    monkeypatch.setattr(journal_module, "LOG_KEEP_BYTES", 2_000)
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.start()
    address = MqttAddress.parse(mosquitto.url)
    staying = make_client(address, "staying")
    staying.connect(address.host, address.port)
    staying.loop_start()
    caught_up: list[int] = []
    try:
        wait_until(staying.is_connected, timeout=10, what="a client connected")
        for n in range(20):  # log lines: over 2,000 bytes
            passing = make_client(address, f"passing-{n}")
            passing.connect(address.host, address.port)
            passing.loop(0.05)
            passing.disconnect()
        wait_until(lambda: mosquitto.log_file.stat().st_size > 2_000, timeout=10, what="a long log")
        mosquitto.set_aside_log(before=lambda: caught_up.append(mosquitto.log_file.stat().st_size))
        assert caught_up and b"passing-19" in mosquitto.log_file.with_name("mosquitto.log.1").read_bytes()
        assert mosquitto.log_start == 0 and mosquitto.log_file.stat().st_size < 2_000
        limits = connack(address, "late")
        assert (limits.get("MaximumQoS"), limits.get("TopicAliasMaximum", 0)) == (1, 0), limits
        wait_until(lambda: b"as late " in _read(mosquitto.log_file), timeout=10, what="the emptied log written")
        assert staying.is_connected() and mosquitto.running()
        mosquitto.set_aside_log()  # short now: left as it is
        assert b"as late " in _read(mosquitto.log_file)
    finally:
        staying.disconnect()
        staying.loop_stop()
        mosquitto.stop()


def connack(address: MqttAddress, client_id: str) -> dict[str, object]:
    """The properties of the broker's CONNACK to an MQTT 5 client."""
    client = make_client(address, client_id)
    got: list[dict[str, object]] = []
    client.on_connect = lambda _c, _u, _f, _rc, props: got.append(props.json() if props else {})
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        wait_until(lambda: got, timeout=10, what="the CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def test_a_broker_that_cannot_write_its_log_is_stopped_and_says_where(tmp_path: Path) -> None:
    # It would listen and acknowledge with nothing on disk: refused at start instead.
    (tmp_path / "mosquitto" / "mosquitto.log").mkdir(parents=True)
    mosquitto = broker(tmp_path / "mosquitto")
    with pytest.raises(BrokerError, match=r"wrote nothing to its log .*mosquitto\.log.*--data-dir"):
        mosquitto.start()
    assert not mosquitto.running()
    assert port_free(mosquitto.port)


def test_a_broker_directory_it_cannot_prepare_is_an_error_naming_the_path_and_setting(tmp_path: Path) -> None:
    # A data dir whose mosquitto/ could not be changed (chattr +i, another owner) gave a traceback.
    (tmp_path / "mosquitto").write_text("a file where the broker's directory goes")
    mosquitto = broker(tmp_path / "mosquitto")
    with pytest.raises(BrokerError) as refused:
        mosquitto.start()
    assert str(refused.value).startswith(f"cannot prepare {tmp_path / 'mosquitto'}"), refused.value
    assert str(refused.value).endswith("(--data-dir, or EVENTPIPE_DATA_DIR)"), refused.value


def test_a_binary_given_as_a_path_that_is_not_there_is_said_so(tmp_path: Path) -> None:
    mosquitto = Mosquitto(
        free_port(),
        tmp_path / "m",
        100,
        "/nowhere/mosquitto",
        max_payload_bytes=65_536,
        session_expiry_s=SESSION_EXPIRY_S,
    )
    with pytest.raises(BrokerError, match=r"^'/nowhere/mosquitto' is not there: install Mosquitto"):
        mosquitto.start()


def test_a_save_writes_the_persistence_file_now_not_at_the_first_autosave(tmp_path: Path) -> None:
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.start()
    try:
        asked = time.monotonic()
        mosquitto.save()
        assert mosquitto.database.exists()
        assert time.monotonic() - asked < 5, "the autosave comes 10 s after the start"
    finally:
        mosquitto.stop()


def test_a_save_the_broker_cannot_write_is_an_error_naming_the_file(tmp_path: Path) -> None:
    # Whatever keeps it from writing (here a directory where its file goes), it would keep nothing on a restart.
    (tmp_path / "mosquitto" / "data" / "mosquitto.db").mkdir(parents=True)
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.start()
    try:
        with pytest.raises(BrokerError, match=r"cannot write its persistence file .*mosquitto\.db: Is a directory"):
            mosquitto.save()
    finally:
        mosquitto.stop()


def test_a_save_error_is_found_behind_more_log_than_one_read_takes(tmp_path: Path) -> None:
    # A burst of connections logged past the 1 MiB one poll reads: the error after it must still be found
    # (a poll that read the tail only would miss one logged early; one that reads from the start never
    # reached it), by polls that move on through the log.
    mosquitto = broker(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    noise = b"1700000000: New connection from 127.0.0.1:5555 on port 1883.\n" * 40_000  # 2.5 MB
    mosquitto.log_file.write_bytes(noise + b"1700000001: Error: Permission denied.\n" + noise)
    offsets = [0, 0]
    found = [mosquitto._save._error(offsets) for _ in range(4)]
    assert "Permission denied." in found, found
    assert found[0] is None and offsets[0] > 0, "a poll reads a bounded part, and the next goes on from it"


def test_a_stop_watches_the_file_the_broker_writes_its_save_into(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A stop waits while the save under way exists (Mosquitto.stop): the broker's own name for it, pinned here
    # by putting a directory where that file goes, which its save then reports it cannot open.
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto._save.saving.mkdir(parents=True)
    mosquitto.start()
    try:
        with pytest.raises(BrokerError, match=r"cannot write its persistence file"):
            mosquitto.save()
        logged = mosquitto.log_file.read_text(errors="replace").replace("//", "/")  # it writes "data//mosquitto..."
        # 2.0: "unable to open <it> for writing."; 2.1: "unable to remove stale tmp file <it>, error Is a directory".
        assert f"{mosquitto._save.saving}." in logged or f"{mosquitto._save.saving}," in logged, logged
    finally:
        saved = mosquitto.stop(timeout=2)
    # Its save at the stop failed too: said, not taken for a clean stop (a full or read-only disk did this, and
    # `up` exited saying the worker's unacknowledged messages would be redelivered; none were).
    assert saved is False
    assert "mosquitto did not save its queue at its stop" in caplog.text


def test_a_stop_whose_save_is_written_says_so(tmp_path: Path) -> None:
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.start()
    assert mosquitto.stop(timeout=5) is True
    assert mosquitto.database.exists()


def test_a_thousand_idle_connections_do_not_keep_a_new_client_out(tmp_path: Path) -> None:
    # Under the 1,024 files `eventpipe up` runs with, the broker inherited them: an attack's 1,011 idle
    # connections kept every new client out ("denied access by tcpd"), the worker's reconnect with them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"a hard file limit of {hard} leaves no room for the test's own 1,100 sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what the broker inherits from `up`
    try:
        mosquitto = broker(tmp_path / "mosquitto")
        mosquitto.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", mosquitto.port)))
        client = make_client(MqttAddress.parse(mosquitto.url), "newcomer")
        connected: list[object] = []
        client.on_connect = lambda *args: connected.append(args[3])
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        try:
            wait_until(lambda: bool(connected), timeout=10, what="a CONNACK beside 1,100 idle connections")
            assert not connected[0].is_failure  # type: ignore[attr-defined]
        finally:
            client.loop_stop()
            client.disconnect()
    finally:
        for connection in idle:
            connection.close()
        mosquitto.stop()


SAVES = Path(__file__).parents[1] / "unit" / "data" / "mosquitto-2.0.11"  # made by Mosquitto 2.0.11


def _into_header_of_a_queued_message(whole: bytes) -> bytes:
    """The whole save cut 4 bytes into the header of its 51st queued message: 2.0.11 starts on this
    without a word, with 50 of its 100 queued messages."""
    queued = [chunk for chunk in snapshot.chunks(whole) if chunk.kind == snapshot.CLIENT_MSG]
    return whole[: queued[50].offset + 4]


@pytest.mark.parametrize(
    ("made", "cut"),
    [
        (lambda: (SAVES / "disk-full.db").read_bytes(), "cut short at byte 12,259"),
        (lambda: _into_header_of_a_queued_message((SAVES / "whole.db").read_bytes()), "cut short at byte "),
        (lambda: bytes(8192), "is not a Mosquitto persistence file"),
    ],
    ids=["which 2.0.11 refuses", "which 2.0.11 starts on with half its queue", "zeros"],
)
def test_a_save_that_is_not_whole_is_refused_before_the_broker_starts_on_it(
    tmp_path: Path, made: Callable[[], bytes], cut: str
) -> None:
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.database.parent.mkdir(parents=True)
    mosquitto.database.write_bytes(content := made())
    with pytest.raises(BrokerError) as refused:
        mosquitto.start()
    said = str(refused.value)
    assert said.startswith(f"{mosquitto.database} ({len(content):,} bytes), "), said
    assert cut in said and "mv " in said and "keeping it for inspection" in said, said
    assert not mosquitto.running() and port_free(mosquitto.port)
    assert mosquitto.database.read_bytes() == content, "left as it was, for the user to set aside"


def test_an_empty_save_is_said_and_the_broker_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # What a save onto a disk already full leaves: nothing in it to set aside, and a start on a disk still
    # full must serve reads (tests/e2e/test_up.py); the worker then counts its session lost.
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.database.parent.mkdir(parents=True)
    mosquitto.database.write_bytes(b"")
    mosquitto.start()
    try:
        assert "is cut short at byte 0: " in caplog.text and "starts with an empty queue" in caplog.text
    finally:
        mosquitto.stop(timeout=5)


def test_a_whole_save_starts_with_its_queue(tmp_path: Path) -> None:
    mosquitto = broker(tmp_path / "mosquitto")
    mosquitto.database.parent.mkdir(parents=True)
    mosquitto.database.write_bytes(_unexpired((SAVES / "whole.db").read_bytes()))
    mosquitto.start()
    try:
        assert len(_drained(mosquitto, "worker-1")) == 100
    finally:
        assert mosquitto.stop(timeout=5) is True


def _unexpired(save: bytes) -> bytes:
    """`save` with each session's expiry an hour from now: a save holds it as a time (host-endian, after
    the chunk's 8-byte header), and the broker drops at its start a session whose time has passed."""
    fresh = bytearray(save)
    for chunk in snapshot.chunks(save):
        if chunk.kind == snapshot.CLIENT:
            struct.pack_into("=q", fresh, chunk.offset + snapshot.CHUNK_HEADER_BYTES, int(time.time()) + 3600)
    return bytes(fresh)


def _drained(mosquitto: Mosquitto, client_id: str) -> list[bytes]:
    """What the broker has queued for the persistent session `client_id`, received (and acknowledged)."""
    address = MqttAddress.parse(mosquitto.url)
    client = make_client(address, client_id)
    got: list[bytes] = []
    client.on_message = lambda _client, _userdata, message: got.append(message.payload)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect(address.host, address.port, clean_start=False, properties=properties)
    client.loop_start()
    try:
        wait_until(lambda: len(got) >= 100, timeout=10, what="the queued messages")
        time.sleep(0.2)  # none more
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def test_a_save_cut_short_by_a_full_disk_is_a_failed_save_and_a_failed_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Mosquitto 2.0.11 renames a save it could not write in full into place: a new file, which save() and
    # stop() took for a save, and `up` started, or exited 0, on a queue cut short.
    mosquitto = broker(tmp_path / "mosquitto")
    with full_filesystem(mosquitto.database.parent, size="4m", filled=False) as data:
        mosquitto.start()
        try:
            _queue(mosquitto, "worker-1", 100)
            mosquitto.save()
            whole = mosquitto.database.read_bytes()
            # Room for the messages and the start of the queue that names them, as make.py gives it.
            queue = next(chunk.offset for chunk in snapshot.chunks(whole) if chunk.kind == snapshot.CLIENT)
            room = (queue // 4096 + 1) * 4096
            _leave(data, room)
            renames_cut_saves = b"mosquitto version 2.0." in mosquitto.log_file.read_bytes()
            if renames_cut_saves:
                mosquitto.save()
                assert re.search(r"mosquitto cut short its save: .*mosquitto\.db \(.* bytes\), ", caplog.text)
            else:
                # Mosquitto 2.1 checks each step of a save, renames none it could not write in full, and says
                # so in its own words ("Error saving in-memory database, unable to flush ..."): a failed save.
                with pytest.raises(BrokerError, match=r"mosquitto\.db: No space left on device"):
                    mosquitto.save()
            _leave(data, room)  # as much again for the stop's save: the file it replaced was larger
        finally:
            saved = mosquitto.stop(timeout=5)
        assert saved is False
        if renames_cut_saves:
            assert "mosquitto's save at its stop was cut short" in caplog.text
            assert snapshot.cut_at(mosquitto.database.read_bytes()) is not None
        else:
            assert "mosquitto did not save its queue at its stop" in caplog.text
            assert mosquitto.database.read_bytes() == whole, "the last whole save is kept"


def _leave(directory: Path, room: int) -> None:
    """Fill the filesystem of `directory` but for `room` bytes."""
    left = os.statvfs(directory)
    (directory / f"filler-{time.monotonic_ns()}").write_bytes(bytes(left.f_bavail * left.f_frsize - room))


def _queue(mosquitto: Mosquitto, client_id: str, count: int) -> None:
    """A persistent session for `client_id`, subscribed and gone, and `count` QoS 1 messages queued for it."""
    address = MqttAddress.parse(mosquitto.url)
    client = make_client(address, client_id)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect(address.host, address.port, clean_start=False, properties=properties)
    client.loop_start()
    acked: list[int] = []
    client.on_subscribe = lambda _client, _userdata, mid, _codes, _properties: acked.append(mid)
    try:
        wait_until(client.is_connected, timeout=10, what="connected")
        client.subscribe("events/#", qos=1)
        wait_until(lambda: acked, timeout=10, what="the SUBACK")
    finally:
        client.disconnect()
        client.loop_stop()
    events = [("events/e", f"event-{n:04d}-".encode().ljust(40, b"x")) for n in range(count)]
    assert publish_raw(mosquitto.url, events) == count
