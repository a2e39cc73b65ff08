"""`eventpipe` run as a user runs it: a child process, its output, its exit code."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventpipe.port import free_port
from eventpipe.process import processes
from tests.support.wait import wait_until


def eventpipe_command() -> list[str]:
    script = Path(sys.executable).parent / "eventpipe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "eventpipe.cli.main"]


def run_eventpipe(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*eventpipe_command(), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


# eventpipe's own probe events are left out, as users' reads leave them out.
IDS_SQL = "SELECT event_id FROM events FINAL WHERE event_type != '_probe' FORMAT TSV"
RAW_STATS_SQL = "SELECT count(), uniqExact(event_id) FROM events WHERE event_type != '_probe' FORMAT TSV"

COUNT_SQL = {
    "events": "SELECT count() FROM events FINAL WHERE event_type != '_probe'",
    "dead_letters": "SELECT count() FROM dead_letters FINAL",
}


def _query(data_dir: Path, sql: str) -> str:
    """Run `sql` in a child process: chDB opens one engine path per process."""
    code = (
        "import sys, clickhouse_connect\n"
        "print(clickhouse_connect.get_client(dsn=sys.argv[1]).raw_query(sys.argv[2]).decode())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, f"chdb://{(data_dir / 'clickhouse').resolve()}", sql],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def query(data_dir: Path, sql: str) -> str:
    """What `sql` answers on the store of `data_dir`, as text (run in a child process, as every read here)."""
    return _query(data_dir, sql)


def stored_ids(data_dir: Path) -> list[str]:
    """Every event id as reads see it (FINAL), duplicates kept so a test can count them."""
    return [line for line in _query(data_dir, IDS_SQL).splitlines() if line]


def raw_stats(data_dir: Path) -> tuple[int, int]:
    """(rows, distinct ids) before merges: rows above distinct show redeliveries were absorbed."""
    rows, distinct = _query(data_dir, RAW_STATS_SQL).split()
    return int(rows), int(distinct)


def count_rows(data_dir: Path, table: str = "events") -> int:
    """Counted as reads see it (FINAL, no probes)."""
    return int(_query(data_dir, COUNT_SQL[table]).strip())


def child_pid(parent: int, name: str) -> int:
    """The process `parent` started under this command name, read from /proc (no `ps`: slim images lack it)."""
    found = [process.pid for process in processes() if process.command == name and process.ppid == parent]
    assert found, f"no {name} process under {parent}"
    return found[0]


class Up:
    """`eventpipe up` on free ports in `data_dir`, stopped by PID."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        prometheus: bool = True,
        cwd: Path | None = None,
    ) -> None:
        # `cwd`: run it there, with `data_dir` relative to it, as a user's `--data-dir .eventpipe` is.
        self.data_dir = cwd / data_dir if cwd else data_dir
        self.mqtt_port, self.api_port, self.metrics_port = free_port(), free_port(), free_port()
        self.prometheus_port = free_port()
        ports = ["--api-port", str(self.api_port), "--metrics-port", str(self.metrics_port)]
        # 0 starts none: tests that do not look at Prometheus skip its start and scrapes.
        ports += ["--prometheus-port", str(self.prometheus_port if prometheus else 0)]
        if "--mqtt-url" not in extra:
            ports += ["--mqtt-port", str(self.mqtt_port)]
        self.process = subprocess.Popen(
            [*eventpipe_command(), "up", "--data-dir", str(data_dir), *ports, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            # Its own process group, like a shell job: a test can signal the group as Ctrl-C does.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def generated_key(self) -> str:
        """The API key `up` generated, from its file: the banner shows it only at the start that made it."""
        return (self.data_dir / "api-key").read_text().strip()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60) -> str:
        """The ready line, once the whole banner after it is read (stack.banner ends it with "try: curl"):
        the API key line comes after the ready line, and a CI run once looked for it in between."""

        def ready_line() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError(f"eventpipe up exited {self.process.returncode}:\n{self.output()}")
            if not any(line.startswith("try: curl") for line in self.lines):
                return None
            return next((line for line in self.lines if "ready" in line), None)

        return wait_until(ready_line, timeout=timeout, what="the ready line")

    def get(self, path: str, port: int | None = None, key: str | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{port or self.api_port}{path}"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, response.read()

    def metric(self, name: str, path: str = "/metrics") -> float:
        """A sample without labels from the metrics port: the worker's, or the API's at telemetry.exporter.API_PATH."""
        _status, body = self.get(path, self.metrics_port)
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60, group: bool = False) -> int:
        """Signal the process (or its whole group, as a terminal's Ctrl-C does) and wait for its exit code."""
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def ready(data_dir: Path, env: dict[str, str]) -> Iterator[Up]:
    """`eventpipe up` without Prometheus, once ready; killed afterwards, whatever happened."""
    stack = Up(data_dir, env=env, prometheus=False)
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.kill()
