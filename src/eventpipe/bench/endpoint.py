"""Scenario 3: API endpoints over many stored events, against their own SQL run directly.

One chDB directory is filled (bench.fill), then read in turn by three
processes, never two at once (chDB allows one process per directory): the
direct SQL (bench.query), `eventpipe api` answering this process's requests,
and the direct SQL again. The two direct runs are pooled, so merges that
ClickHouse finishes in between weigh on both sides alike.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from eventpipe.bench import service
from eventpipe.bench.client import ApiClient
from eventpipe.bench.query import ENDPOINTS, timed
from eventpipe.bench.stats import Timing
from eventpipe.errors import EventpipeError


@dataclass(frozen=True)
class Comparison:
    name: str
    path: str
    api: Timing
    direct: Timing

    @property
    def ratio(self) -> float:
        """API p50 over direct p50."""
        return self.api.p50 / self.direct.p50 if self.direct.p50 else 0.0


def _child(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False, timeout=1800
    )
    if done.returncode != 0:
        raise EventpipeError(f"{module} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def fill(data_dir: Path, count: int) -> float:
    """Append `count` events to the store of `data_dir` (`eventpipe bench fill`); return the seconds it took."""
    out = _child("eventpipe.cli.main", "bench", "fill", "--data-dir", str(data_dir), "--count", str(count))
    return float(json.loads(out)["seconds"])


def engine(data_dir: Path) -> Path:
    """The chDB directory inside an `eventpipe up` data dir."""
    return data_dir / "clickhouse"


def _direct(data_dir: Path, seconds: float) -> dict[str, list[float]]:
    out = _child("eventpipe.bench.query", "--data-dir", str(engine(data_dir)), "--seconds", str(seconds))
    return {name: list(samples) for name, samples in json.loads(out).items()}


def _through_api(data_dir: Path, seconds: float, expected: int) -> dict[str, list[float]]:
    key = secrets.token_urlsafe(16)
    api, port = service.api(f"chdb://{engine(data_dir).resolve()}", key, data_dir.parent / "api.log")
    client = ApiClient(port, key)
    try:
        client.wait_ready()
        results = {}
        for name, (path, _query) in ENDPOINTS.items():
            _check(name, *client.get(path)[:2], expected)

            def run(path: str = path) -> None:
                status, body, _seconds = client.get(path)
                if status != 200:
                    raise EventpipeError(f"GET {path} answered {status}: {body[:200]!r}")

            results[name] = timed(run, seconds, 20, 2_000)
        return results
    finally:
        client.close()
        api.stop()


def _check(name: str, status: int, body: bytes, expected: int) -> None:
    """The API must answer what the SQL would: a full page, every stored event counted."""
    if status != 200:
        raise EventpipeError(f"{name} answered {status}: {body[:200]!r}")
    answer = json.loads(body)
    got = len(answer["items"]) if name == "events" else answer["total"]
    want = min(100, expected) if name == "events" else expected
    if got != want:
        raise EventpipeError(f"{name} answered {got} where {want} were expected")


def compare(data_dir: Path, count: int, seconds: float) -> list[Comparison]:
    before = _direct(data_dir, seconds / 2)
    through_api = _through_api(data_dir, seconds, count)
    after = _direct(data_dir, seconds / 2)
    return [
        Comparison(name, path, Timing.of(through_api[name]), Timing.of(before[name] + after[name]))
        for name, (path, _query) in ENDPOINTS.items()
    ]
