"""`eventpipe api` before a ClickHouse that accepts connections and never answers: how long it waits."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from eventpipe.port import free_port
from tests.support.gateway import SILENT, gateway
from tests.support.stack import eventpipe_command, run_eventpipe
from tests.support.wait import wait_until

KEY = "e2e-key-0123456789"
# README: reads wait EVENTPIPE_API_QUERY_TIMEOUT_S + 5 s (15 s at its default), /readyz 2 s; they waited
# 60 s before. The bounds here are loose, for a busy machine.
READ_BOUND_S = 40
PROBE_BOUND_S = 10


def answer(url: str, key: str | None = None) -> tuple[int, dict[str, str], httpx.Headers, float]:
    """Status, JSON body, headers and how long it took, for a GET of `url`."""
    started = time.monotonic()
    response = httpx.get(url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=90)
    return response.status_code, response.json(), response.headers, time.monotonic() - started


def test_a_hung_clickhouse_gets_503_within_the_api_s_bound(tmp_path: Path) -> None:
    # Before, every request and /readyz waited the driver's 60 s for a ClickHouse that accepts and never
    # answers, past README's 10 s, each holding one of the API's threads all that time.
    port = free_port()
    with gateway() as server:
        env = {
            **os.environ,
            "EVENTPIPE_CLICKHOUSE_DSN": server.dsn,
            "EVENTPIPE_API_KEYS": KEY,
            "EVENTPIPE_API_PORT": str(port),
            "EVENTPIPE_METRICS_PORT": "0",
            "EVENTPIPE_DATA_DIR": str(tmp_path),
        }
        with (tmp_path / "api.log").open("w") as log:
            api = subprocess.Popen([*eventpipe_command(), "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _alive(f"{base}/healthz"), what="eventpipe api up", timeout=60)
            server.answer = SILENT
            status, body, headers, took = answer(f"{base}/readyz")
            assert (status, body["error"]) == (503, "unavailable"), body
            assert took < PROBE_BOUND_S, f"/readyz took {took:.1f} s"
            status, body, headers, took = answer(f"{base}/events?limit=1", KEY)
            assert (status, body["error"]) == (503, "unavailable"), body
            assert int(headers["Retry-After"] or 0) > 0
            assert took < READ_BOUND_S, f"a read took {took:.1f} s"
        finally:
            api.terminate()
            api.wait(30)


@pytest.mark.parametrize("command", ["api", "migrate"])
def test_a_command_refuses_to_start_on_a_hung_clickhouse_within_the_bound(tmp_path: Path, command: str) -> None:
    # Before, `eventpipe api` (and `migrate`, `worker`) sat 61 s on a ClickHouse that never answers before
    # its one-line error.
    with gateway() as server:
        server.hung = True
        env = {
            **os.environ,
            "EVENTPIPE_CLICKHOUSE_DSN": server.dsn,
            "EVENTPIPE_API_KEYS": KEY,
            "EVENTPIPE_DATA_DIR": str(tmp_path),
        }
        started = time.monotonic()
        done = run_eventpipe(command, env={**env, "EVENTPIPE_API_PORT": str(free_port())}, timeout=120)
        took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "EVENTPIPE_CLICKHOUSE_DSN" in done.stderr and "secret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert took < READ_BOUND_S, f"it took {took:.1f} s to give up"


def _alive(url: str) -> bool:
    try:
        return answer(url)[0] == 200
    except httpx.TransportError:
        return False
