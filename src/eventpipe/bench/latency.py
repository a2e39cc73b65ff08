"""Scenario 2: publish -> queryable latency at a fixed rate, measured from the outside.

A publisher thread sends QoS 1 demo events at the rate, a few at a time every
TICK_S. Some of them are samples: their publish time is noted, and the main
thread polls `GET /events/{id}` until it answers 200. The latency of a sample
is the time from the write of its PUBLISH to the end of the first 200 answer.

Samples are polled oldest first, one request at a time, each at most every
`poll_s`, and the next sample right after one is found: a worker commits its
batches in arrival order, so a sample cannot be queryable while an older one
is not, and polling them in order keeps the load the measurement adds to the
stack (one request every `poll_s`) independent of the rate. The figures are
an upper bound, late by up to `poll_s` plus one request.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from eventpipe.bench.backlog import demo_messages
from eventpipe.bench.client import ApiClient
from eventpipe.bench.wire import Publisher
from eventpipe.errors import EventpipeError

TICK_S = 0.005
# A sample not queryable by then counts as lost (and says something is wrong).
GIVE_UP_S = 30.0


@dataclass(frozen=True)
class Latency:
    rate: float  # asked for
    achieved: float  # published per second, as sent
    latencies: list[float]  # seconds, one per sample found
    lost: int  # samples never seen within GIVE_UP_S
    count: int = 0  # events published
    stack_cpu_s: float = 0.0  # eventpipe up's process (worker and API) meanwhile
    broker_cpu_s: float = 0.0

    def per_10k(self, cpu_s: float) -> float:
        return cpu_s / self.count * 10_000 if self.count else 0.0


class _Load(threading.Thread):
    """Publishes `messages` at `rate`, noting (event id, publish time) of every `every`-th one in `samples`."""

    def __init__(self, url: str, messages: list[tuple[str, bytes]], rate: float, every: int) -> None:
        super().__init__(name="bench-load", daemon=True)
        self._publisher = Publisher(url, f"bench-load-{uuid.uuid4().hex[:8]}")
        self._messages, self._rate, self._every = messages, rate, every
        self.samples: deque[tuple[str, float]] = deque()
        self.elapsed = 0.0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            sent, total = 0, len(self._messages)
            started = time.perf_counter()
            while sent < total:
                due = min(total, int((time.perf_counter() - started) * self._rate) + 1)
                if due > sent:
                    chunk = self._messages[sent:due]
                    marks = [i for i in range(sent, due) if i % self._every == 0]
                    published = time.perf_counter()
                    self._publisher.send(chunk)
                    for index in marks:
                        self.samples.append((json.loads(self._messages[index][1])["event_id"], published))
                    sent = due
                time.sleep(TICK_S)
            self.elapsed = time.perf_counter() - started
            self._publisher.wait_acked(total)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.failure = exc
        finally:
            self._publisher.close()


def _find(api: ApiClient, event_id: str, published: float, poll_s: float) -> float | None:
    """Poll until the event is served; return its latency, or None after GIVE_UP_S."""
    while True:
        status, body, _seconds = api.get(f"/events/{event_id}")
        now = time.perf_counter()
        if status == 200:
            return now - published
        if status != 404:
            raise EventpipeError(f"GET /events/{event_id} answered {status}: {body[:200]!r}")
        if now - published > GIVE_UP_S:
            return None
        time.sleep(poll_s)


def measure(url: str, api: ApiClient, rate: float, seconds: float, samples_per_s: float, poll_s: float) -> Latency:
    count = max(1, int(rate * seconds))
    every = max(1, round(rate / samples_per_s))
    load = _Load(url, demo_messages(count, seed=int(rate)), rate, every)
    load.start()
    latencies: list[float] = []
    lost = 0
    while load.is_alive() or load.samples:
        if not load.samples:
            time.sleep(poll_s)
            continue
        event_id, published = load.samples.popleft()
        # Not before a poll interval has passed: nothing is queryable that fast.
        time.sleep(max(0.0, published + poll_s - time.perf_counter()))
        found = _find(api, event_id, published, poll_s)
        if found is None:
            lost += 1
        else:
            latencies.append(found)
    load.join()
    if load.failure is not None:
        raise EventpipeError(f"the load publisher failed: {load.failure}")
    return Latency(rate, count / load.elapsed if load.elapsed else 0.0, latencies, lost, count)
