"""Make whole.db and disk-full.db with the Mosquitto on PATH (2.0.11 for the files here), as root: the
second save is made onto a tmpfs with room for the message store and a page more, no more.

    sudo PYTHONPATH=src .venv/bin/python tests/unit/data/mosquitto-2.0.11/make.py
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from eventpipe.stack import snapshot

HERE = Path(__file__).parent
PAGE = 4096  # tmpfs allocates pages, and stdio writes 4 KiB buffers from the file's start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connected(client_id: str, port: int, clean: bool) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 0 if clean else 3600
    client.connect("127.0.0.1", port, clean_start=clean, properties=properties)
    client.loop_start()
    return client


def queue(port: int) -> None:
    """A persistent session subscribed to two filters, gone; 100 QoS 1 messages queued for it (every third
    with a user property) and a retained one."""
    worker = connected("worker-1", port, clean=False)
    worker.subscribe([("events/#", 1), ("probe/x", 1)])
    time.sleep(0.5)
    worker.disconnect()
    worker.loop_stop()
    producer = connected("producer", port, clean=True)
    time.sleep(0.2)
    sent = []
    for index in range(100):
        properties = Properties(PacketTypes.PUBLISH)
        if index % 3 == 0:
            properties.UserProperty = ("n", str(index))
        sent.append(
            producer.publish(
                f"events/{index % 7}", f"event-{index:04d}-".encode().ljust(40, b"x"), 1, properties=properties
            )
        )
    sent.append(producer.publish("retained/a", b"kept", 1, retain=True))
    for info in sent:
        info.wait_for_publish(10)
    producer.disconnect()
    producer.loop_stop()


def saved(broker: subprocess.Popen[bytes], db: Path) -> None:
    """Ask for a save (SIGUSR1) and wait until a file is renamed into place."""
    before = db.stat().st_ino if db.exists() else None
    broker.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not (db.exists() and db.stat().st_ino != before):
        assert time.monotonic() < deadline, "no save"
        time.sleep(0.05)
    time.sleep(0.2)


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data"
        data.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], check=True)
        try:
            port = free_port()
            config = Path(work) / "mosquitto.conf"
            config.write_text(
                f"user {pwd.getpwuid(os.geteuid()).pw_name}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
                "persistence true\n"
                f"persistence_location {data}/\nautosave_interval 3600\nlog_dest file {work}/mosquitto.log\n"
            )
            broker = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(config)])
            try:
                time.sleep(0.5)
                queue(port)
                db = data / "mosquitto.db"
                saved(broker, db)
                whole = db.read_bytes()
                chunks = list(snapshot.chunks(whole))
                store_end = next(chunk.offset for chunk in chunks if chunk.kind == snapshot.CLIENT)
                room = (store_end // PAGE + 1) * PAGE
                assert room < next(chunk.offset for chunk in chunks if chunk.kind == snapshot.SUB)
                vfs = os.statvfs(data)
                (data / "filler").write_bytes(bytes(vfs.f_bavail * vfs.f_frsize - room))
                saved(broker, db)  # 2.0.11 renames the cut file into place
                (HERE / "whole.db").write_bytes(whole)
                (HERE / "disk-full.db").write_bytes(db.read_bytes())
            finally:
                broker.terminate()
                broker.wait(10)
        finally:
            subprocess.run(["umount", str(data)], check=False)


if __name__ == "__main__":
    main()
