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
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from eventpipe.bench.backlog import demo_messages
from eventpipe.bench.client import ApiClient
from eventpipe.bench.publisher import Publisher
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
    ingest_cpu_per_10k: float  # the stack's CPU per 10k events while nothing polled it
    polls_per_s: float  # API requests the measurement made, while it did
    stack_cores: float  # the stack's CPU seconds per second, polls included
    broker_cores: float


class Load(threading.Thread):
    """Publishes `messages` at `rate`; from index `sample_from` on, notes (event id, publish time) of
    every `every`-th one in `samples`."""

    def __init__(self, url: str, messages: list[tuple[str, bytes]], rate: float, every: int, sample_from: int) -> None:
        super().__init__(name="bench-load", daemon=True)
        self._publisher = Publisher(url, f"bench-load-{uuid.uuid4().hex[:8]}")
        self._messages, self._rate, self._every, self._sample_from = messages, rate, every, sample_from
        self.samples: deque[tuple[str, float]] = deque()
        self.sent = 0
        self.elapsed = 0.0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            total = len(self._messages)
            started = time.perf_counter()
            while self.sent < total:
                due = min(total, int((time.perf_counter() - started) * self._rate) + 1)
                if due > self.sent:
                    first = max(self.sent, self._sample_from)
                    marks = [i for i in range(first, due) if i % self._every == 0]
                    published = time.perf_counter()
                    self._publisher.send(self._messages[self.sent : due])
                    for index in marks:
                        self.samples.append((json.loads(self._messages[index][1])["event_id"], published))
                    self.sent = due
                time.sleep(TICK_S)
            self.elapsed = time.perf_counter() - started
            self._publisher.wait_acked(total)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.failure = exc
        finally:
            self._publisher.close()


def _find(api: ApiClient, event_id: str, published: float, poll_s: float) -> tuple[float | None, int]:
    """Poll until the event is served; return its latency (None after GIVE_UP_S) and the requests made."""
    polls = 0
    while True:
        status, body, _seconds = api.get(f"/events/{event_id}")
        polls += 1
        now = time.perf_counter()
        if status == 200:
            return now - published, polls
        if status != 404:
            raise EventpipeError(f"GET /events/{event_id} answered {status}: {body[:200]!r}")
        if now - published > GIVE_UP_S:
            return None, polls
        time.sleep(poll_s)


def measure(
    url: str,
    api: ApiClient,
    rate: float,
    phases: tuple[float, float],
    samples_per_s: float,
    poll_s: float,
    cpu: tuple[Callable[[], float], Callable[[], float]],
) -> Latency:
    """Publish at `rate` for quiet + polled seconds (`phases`): the stack's CPU (cpu[0]) is read while
    nothing polls it, the latency afterwards. cpu[1] reads the broker's."""
    quiet_s, polled_s = phases
    stack_cpu, broker_cpu = cpu
    total = max(1, int(rate * (quiet_s + polled_s)))
    sample_from = int(rate * quiet_s)
    # Events never published before: seeded by the rate, a rate measured twice (or the warm-up's) sent
    # ids already stored, whose samples were found at the first poll.
    messages = demo_messages(total, seed=secrets.randbits(64))
    load = Load(url, messages, rate, max(1, round(rate / samples_per_s)), sample_from)
    load.start()
    # The quiet phase: a moment to settle, then the stack's CPU over the rest of it.
    time.sleep(min(0.5, quiet_s / 2))
    quiet = (stack_cpu(), load.sent)
    time.sleep(max(0.0, quiet_s - min(0.5, quiet_s / 2)))
    ingest_cpu, ingested = stack_cpu() - quiet[0], load.sent - quiet[1]
    started, before = time.perf_counter(), (stack_cpu(), broker_cpu())
    latencies: list[float] = []
    lost = polls = 0
    while load.is_alive() or load.samples:
        if not load.samples:
            time.sleep(poll_s)
            continue
        event_id, published = load.samples.popleft()
        # Not before a poll interval has passed: nothing is queryable that fast.
        time.sleep(max(0.0, published + poll_s - time.perf_counter()))
        found, made = _find(api, event_id, published, poll_s)
        polls += made
        if found is None:
            lost += 1
        else:
            latencies.append(found)
    load.join()
    if load.failure is not None:
        raise EventpipeError(f"the load publisher failed: {load.failure}")
    seconds = time.perf_counter() - started
    return Latency(
        rate,
        total / load.elapsed if load.elapsed else 0.0,
        latencies,
        lost,
        ingest_cpu / ingested * 10_000 if ingested else 0.0,
        polls / seconds,
        (stack_cpu() - before[0]) / seconds,
        (broker_cpu() - before[1]) / seconds,
    )
