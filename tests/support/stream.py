"""A steady QoS 1 producer in a thread that remembers which event ids the broker acknowledged."""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt

from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client


class Stream(threading.Thread):
    """Publishes `count` events at `rate`/s to events/stream; survives broker restarts (paho resends)."""

    def __init__(self, url: str, count: int, rate: float, prefix: str | None = None) -> None:
        super().__init__(name="test-stream", daemon=True)
        self.count, self.rate = count, rate
        self.prefix = prefix or uuid.uuid4().hex[:8]
        self._address = MqttAddress.parse(url)
        self._client = make_client(self._address, f"stream-{self.prefix}")
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._lock = threading.Lock()
        self._pending: dict[int, str] = {}
        self._acked: set[str] = set()
        self._early: set[int] = set()
        self._client.on_publish = self._on_publish
        self.published = 0

    def ids(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.count)]

    def run(self) -> None:
        self._client.connect(self._address.host, self._address.port, keepalive=10)
        self._client.loop_start()
        started = time.monotonic()
        for index in range(self.count):
            delay = started + index / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event_id = f"{self.prefix}-{index}"
            body = json.dumps({"event_id": event_id, "event_type": "stream", "seq": index})
            info = self._client.publish("events/stream", body, qos=1)
            with self._lock:
                # The PUBACK may have been handled before publish() returned.
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self._acked.add(event_id)
                else:
                    self._pending[info.mid] = event_id
            self.published = index + 1

    def _on_publish(self, _client: mqtt.Client, _userdata: object, mid: int, reason: object, _props: object) -> None:
        with self._lock:
            if getattr(reason, "is_failure", False):
                self._pending.pop(mid, None)
                return
            event_id = self._pending.pop(mid, None)
            if event_id is None:
                self._early.add(mid)
            else:
                self._acked.add(event_id)

    def acknowledged(self, timeout: float = 60) -> set[str]:
        """Wait for the stream to end and its PUBACKs; return the ids the broker acknowledged."""
        self.join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.01)
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            return set(self._acked)


def stored_stream_ids(dsn: str, prefix: str) -> list[str]:
    """The stream's event ids as reads see them (FINAL), duplicates kept so a test can count them."""
    from eventpipe.store.client import connect

    rows = (
        connect(dsn)
        .query(
            "SELECT event_id FROM events FINAL WHERE startsWith(event_id, {p:String})", parameters={"p": prefix + "-"}
        )
        .result_rows
    )
    return [row[0] for row in rows]


def wait_stored_once(dsn: str, prefix: str, acknowledged: set[str], timeout: float = 120) -> list[str]:
    """Wait until every acknowledged id of the stream is stored; fail, saying how many are not, when they
    are not by `timeout`, or if reads show any twice."""
    deadline = time.monotonic() + timeout
    while not acknowledged <= set(ids := stored_stream_ids(dsn, prefix)) and time.monotonic() < deadline:
        time.sleep(0.5)
    missing = acknowledged - set(ids)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged events not stored in {timeout:.0f} s"
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates visible to reads"
    return ids
