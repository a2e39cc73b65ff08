"""Scenario 3: every read endpoint as the store grows (1M, 10M, 100M events), under a live stream.

At each size a fresh `eventpipe up` data dir is filled (`eventpipe bench
fill`). The Reader's own calls are timed directly (bench.query) while the same
stream of demo events arrives over MQTT from a broker of the bench's own into
the worker in that process (bench.inflow), then `eventpipe up` serves the same
reads over HTTP while that stream arrives over MQTT at its own broker (fresh
small parts, as in production), then the direct calls again. Each side times
its reads in turn, round after round (bench.query.timed). Never two processes
on the directory at once: chDB allows one. The two direct runs are pooled, so
merges ClickHouse finishes in between weigh on both sides alike.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from eventpipe.bench import service
from eventpipe.bench.child import environment
from eventpipe.bench.client import ApiClient
from eventpipe.bench.download import Download, download
from eventpipe.bench.query import DAY_MS, endpoints, timed
from eventpipe.bench.stats import Timing
from eventpipe.bench.stream import Stream
from eventpipe.errors import EventpipeError
from eventpipe.stack.child import parent_death_signal
from eventpipe.stack.mosquitto import Mosquitto
from eventpipe.store.dsn import embedded_dsn

# A broker configured as `eventpipe up` configures its own, in a given directory, not yet started.
Broker = Callable[[Path], Mosquitto]


@dataclass(frozen=True)
class Comparison:
    size: int
    name: str
    path: str
    api: Timing | None
    direct: Timing

    @property
    def p50(self) -> float:
        """The API's p50, or the direct one for a read with no endpoint of its own."""
        return self.api.p50 if self.api else self.direct.p50

    @property
    def ratio(self) -> float:
        """API p50 over direct p50."""
        return self.api.p50 / self.direct.p50 if self.api and self.direct.p50 else 0.0


def _child(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
        env=environment(),
        preexec_fn=parent_death_signal(),  # gone with the bench, even killed
    )
    if done.returncode != 0:
        raise EventpipeError(f"{module} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def fill(data_dir: Path, count: int) -> float:
    """Append `count` events to the store of `data_dir` (`eventpipe bench fill`); return the seconds it took."""
    out = _child("eventpipe.cli.main", "bench", "fill", "--data-dir", str(data_dir), "--count", str(count))
    return float(json.loads(out)["seconds"])


def _direct(
    data_dir: Path, seconds: float, spec: dict[str, Any] | None, phase: str, broker: Broker, window: int
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    args = ["--dsn", embedded_dsn(data_dir), "--seconds", str(seconds), "--receive-maximum", str(window)]
    if spec is not None:
        args += ["--spec", json.dumps(spec)]
    # A broker for this run alone: a session left from an earlier run would take a copy of every message.
    direct = broker(data_dir.parent / f"{data_dir.name}-{phase}-broker")
    stream = Stream(direct.url, data_dir.parent / f"{data_dir.name}-{phase}-stream.log")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(direct.stop)
        direct.start()
        cleanup.callback(stream.stop)
        # What is published before the worker subscribes is dropped by the broker.
        stream.start()
        try:
            out = json.loads(_child("eventpipe.bench.query", *args, "--mqtt-url", direct.url))
        except EventpipeError:
            stream.check()  # a publisher that stopped is the cause to report
            raise
        stream.check()
    return out["spec"], {name: list(samples) for name, samples in out["samples"].items()}


def _through_api(
    data_dir: Path, size: int, seconds: float, spec: dict[str, Any], window: int
) -> tuple[dict[str, list[float]], Download]:
    key = secrets.token_urlsafe(16)
    # Whatever ends this, a failure or a signal, stops the stack it started (a nan left it running, orphaned).
    with contextlib.ExitStack() as cleanup:
        stack, mqtt_port, api_port = service.up(data_dir, key, window, cleanup)
        client = ApiClient(api_port, key)
        cleanup.callback(client.close)
        reads = endpoints(spec)
        stream = Stream(f"mqtt://127.0.0.1:{mqtt_port}", data_dir.parent / f"{data_dir.name}-api-stream.log")
        cleanup.callback(stream.stop)
        client.wait_ready()
        stream.start()

        def run(path: str) -> None:
            status, body, _seconds = client.get(path)
            if status != 200:
                raise EventpipeError(f"GET {path} answered {status}: {body[:200]!r}")

        results = timed({name: partial(run, path) for name, (path, _read) in reads.items() if path}, seconds, 10, 2_000)
        # The export last, once: it lasts as long as its window is large.
        now = int(spec["now_ms"])
        path = f"/export?format=ndjson&since={now - DAY_MS}&until={now}"
        exported = download(size, api_port, key, stack.process.pid, path)
        stream.check()
        return results, exported


def compare(
    data_dir: Path, size: int, seconds: float, window: int, broker: Broker
) -> tuple[list[Comparison], Download]:
    """Every read at this size, through HTTP and directly (the stream through a broker from `broker`), and one
    export of the last 24 h."""
    spec, before = _direct(data_dir, seconds / 2, None, "before", broker, window)
    through_api, exported = _through_api(data_dir, size, seconds, spec, window)
    _spec, after = _direct(data_dir, seconds / 2, spec, "after", broker, window)
    out = []
    for name, (path, _read) in endpoints(spec).items():
        api = Timing.of(through_api[name]) if name in through_api else None
        out.append(Comparison(size, name, path or "(direct only)", api, Timing.of(before[name] + after[name])))
    return out, exported
