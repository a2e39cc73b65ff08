"""Guarantees 1 and 2 when the process dies: kill -9 and SIGTERM of `eventpipe up` under a steady stream.

The broker is external (persistent, as in production), so only the worker
process dies. Every event the broker acknowledged to the producer must end up
stored exactly once as reads see it.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.support.services import ContainerBroker, LocalBroker
from tests.support.stack import Up, raw_stats, stored_ids
from tests.support.stream import Stream
from tests.support.wait import wait_until

Broker = LocalBroker | ContainerBroker
# Small batches on a short timer: at this rate a commit starts every 50 ms, so
# kills land before, during and after inserts, and between insert and ack.
ENV = {"EVENTPIPE_BATCH_MAX_ROWS": "200", "EVENTPIPE_BATCH_MAX_MS": "50", "EVENTPIPE_MQTT_RECEIVE_MAXIMUM": "1000"}
RATE = 1500


def start(data: Path, broker: Broker) -> Up:
    up = Up(data, "--mqtt-url", broker.url, env=ENV, prometheus=False)
    up.wait_ready()
    return up


def drain_and_stop(up: Up) -> None:
    """Wait until the worker holds nothing and the broker sends nothing more, then stop it cleanly."""

    def idle() -> bool:
        before = up.metric("eventpipe_messages_received_total")
        time.sleep(1.0)
        return (
            up.metric("eventpipe_messages_in_flight") == 0 and up.metric("eventpipe_messages_received_total") == before
        )

    wait_until(idle, timeout=120, interval=0.1, what="the backlog drained")
    assert up.stop(signal.SIGTERM) == 0, up.output()


def assert_exactly_once(data: Path, acknowledged: set[str], published: list[str]) -> tuple[int, int, int]:
    ids = stored_ids(data)
    duplicates = sum(n - 1 for n in Counter(ids).values())
    stored = set(ids)
    assert duplicates == 0, f"{duplicates} duplicate rows visible to reads"
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert stored <= set(published), "stored events nobody published"
    return len(ids), duplicates, raw_stats(data)[0]


def under_stream(
    data: Path, broker: Broker, count: int, pauses: list[float], interrupt: Callable[[Up], None]
) -> tuple[Stream, set[str]]:
    """Run `eventpipe up` under a steady stream; after each pause interrupt it and start it again.
    Return the stream and the ids the broker acknowledged, once everything has drained."""
    up = start(data, broker)
    stream = Stream(broker.url, count=count, rate=RATE)
    stream.start()
    try:
        for pause in pauses:
            time.sleep(pause)
            interrupt(up)
            up = start(data, broker)
        acknowledged = stream.acknowledged()
        drain_and_stop(up)
    finally:
        up.kill()
    return stream, acknowledged


def test_kill_9_at_any_moment_loses_nothing_and_shows_no_duplicate(tmp_path: Path, broker_factory) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory(1000)
    data = tmp_path / "data"
    rng = random.Random(20261122)
    kills = 0

    def kill(up: Up) -> None:
        nonlocal kills
        held = up.metric("eventpipe_messages_in_flight")
        up.kill()  # SIGKILL: no flush, no ack, no goodbye
        kills += 1
        print(f"kill -9 #{kills} with {held:.0f} messages held uncommitted")

    pauses = [rng.uniform(0.4, 1.6) for _ in range(4)]
    stream, acknowledged = under_stream(data, broker, RATE * 12, pauses, kill)
    rows, duplicates, raw_rows = assert_exactly_once(data, acknowledged, stream.ids())
    assert kills == 4
    print(
        f"published {stream.published}, acknowledged {len(acknowledged)}, stored {rows}, "
        f"duplicates {duplicates}, rows before merge {raw_rows}, kills {kills}"
    )


def test_sigterm_under_load_exits_0_and_loses_nothing(tmp_path: Path, broker_factory) -> None:  # type: ignore[no-untyped-def]
    broker = broker_factory(1000)
    data = tmp_path / "data"

    def terminate(up: Up) -> None:
        assert up.stop(signal.SIGTERM) == 0, up.output()
        assert "stopped cleanly" in up.output()

    stream, acknowledged = under_stream(data, broker, RATE * 6, [1.5, 1.5], terminate)
    rows, _duplicates, _raw = assert_exactly_once(data, acknowledged, stream.ids())
    assert rows == len(acknowledged)
