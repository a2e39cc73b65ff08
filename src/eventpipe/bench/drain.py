"""Scenarios 1 and 4, and the scale-out: drain identical backlogs, one consumer process each.

Every consumer runs as `python -m eventpipe.bench.consumer` (a process of its
own, as in production) and reports its own figures; see that module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eventpipe.bench import backlog
from eventpipe.bench.child import environment
from eventpipe.errors import EventpipeError
from eventpipe.stack.child import parent_death_signal

SHARE_GROUP = "bench"


@dataclass(frozen=True)
class Drain:
    kind: str
    processes: int
    count: int
    seconds: float  # from start to the last message counted or committed (the slowest process)
    cpu_s: float  # all processes together
    rss_start: int  # the largest process, before it drained
    rss_peak: int  # the largest process, at its peak
    broker_cpu_s: float = 0.0  # the broker's CPU seconds while they drained

    @property
    def broker_cpu_per_10k(self) -> float:
        return self.broker_cpu_s / self.count * 10_000 if self.count else 0.0

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.count * 10_000 if self.count else 0.0


def _start(
    kind: str, url: str, client_id: str, count: int, window: int, data_dir: Path, share_group: str = ""
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "eventpipe.bench.consumer", kind, "--url", url, "--client-id", client_id]
    argv += ["--count", str(count), "--receive-maximum", str(window), "--go"]
    if kind == "worker":
        argv += ["--data-dir", str(data_dir / f"chdb-{client_id}")]
    if share_group:
        argv += ["--share-group", share_group]
    pipe = subprocess.PIPE
    # Gone with the bench: a consumer left behind waits out its timeout on a broker that is gone.
    death = parent_death_signal()
    return subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe, text=True, env=environment(), preexec_fn=death)


def _run_together(
    processes: list[subprocess.Popen[str]], kind: str, broker_cpu: Callable[[], float]
) -> tuple[list[dict[str, float]], float]:
    """Wait until every process is set up, start them at once; return their figures and the broker's CPU seconds."""
    assert all(process.stdin and process.stdout for process in processes)
    for process in processes:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "ready":
            _, err = process.communicate(timeout=30)
            raise EventpipeError(f"the {kind} consumer did not start: {(line + err).strip()[-2000:]}")
    cpu_before = broker_cpu()
    for process in processes:
        process.stdin.write("go\n")  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
    figures = []
    for process in processes:
        out, err = process.communicate(timeout=900)
        if process.returncode != 0:
            raise EventpipeError(f"the {kind} consumer failed: {err.strip()[-2000:]}")
        figures.append(json.loads(out.strip().splitlines()[-1]))
    return figures, broker_cpu() - cpu_before


def _summary(kind: str, figures: list[dict[str, float]], broker_cpu_s: float) -> Drain:
    return Drain(
        kind,
        len(figures),
        int(sum(f["count"] for f in figures)),
        max(f["seconds"] for f in figures),
        sum(f["cpu_s"] for f in figures),
        int(max(f["rss_start"] for f in figures)),
        int(max(f["rss_peak"] for f in figures)),
        broker_cpu_s,
    )


def compare(
    url: str, count: int, window: int, work_dir: Path, kinds: tuple[str, ...], broker_cpu: Callable[[], float]
) -> list[Drain]:
    """Queue the same `count` events for one session per kind, then drain them one kind at a time."""
    run = uuid.uuid4().hex[:8]
    sessions = {kind: f"bench-{kind}-{run}" for kind in kinds}
    backlog.fill(url, list(sessions.values()), backlog.demo_messages(count))
    results = []
    for kind, client_id in sessions.items():
        process = _start(kind, url, client_id, count, window, work_dir)
        results.append(_summary(kind, *_run_together([process], kind, broker_cpu)))
    return results


def scale(
    url: str, count: int, window: int, work_dir: Path, kind: str, processes: int, broker_cpu: Callable[[], float]
) -> Drain:
    """`processes` consumers in one shared subscription drain `count` events together.

    Mosquitto hands a shared subscription's messages round-robin to the group's
    sessions, queueing for those offline, so each gets its share in advance.
    """
    run = uuid.uuid4().hex[:8]
    group = f"{SHARE_GROUP}{run}"
    client_ids = [f"bench-{kind}-{run}-{index}" for index in range(processes)]
    backlog.fill(url, client_ids, backlog.demo_messages(count), f"$share/{group}/{backlog.TOPIC_FILTER}")
    started = [_start(kind, url, client_id, 0, window, work_dir, group) for client_id in client_ids]
    result = _summary(kind, *_run_together(started, kind, broker_cpu))
    if result.count != count:
        raise EventpipeError(f"{processes} {kind} consumers drained {result.count} of {count} events")
    return result
