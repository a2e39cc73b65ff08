"""`eventpipe up` and `eventpipe api` as child processes on free ports, as a user runs them."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from eventpipe.bench.child import environment
from eventpipe.errors import EventpipeError
from eventpipe.port import free_port
from eventpipe.stack.child import parent_death_signal


class Service:
    """One `eventpipe` command; its output goes to a log file beside its data."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventpipe.cli.main", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env=environment(env),
            text=True,
            # Gone with the bench, even killed: it stops its broker, and no orphan serves a removed work dir.
            preexec_fn=parent_death_signal(),
        )

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            if self.process.poll() is not None:
                raise EventpipeError(f"eventpipe exited {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise EventpipeError(f"eventpipe did not print {text!r} within {timeout:.0f}s: {self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 10) -> str:
        return " | ".join(self.log.read_text().splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a supervisor stops it: it commits and acks what it holds. SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._handle.close()
        return self.process.returncode


def up(data_dir: Path, key: str, window: int, cleanup: contextlib.ExitStack) -> tuple[Service, int, int]:
    """The native stack (broker, worker, API) on free ports; returns it, its MQTT port and its API port. Its
    stop goes on `cleanup` as it starts: a SIGTERM just after it was ready, before the caller's `try`, left it
    running, writing parts into the work dir the bench had just removed."""
    mqtt_port, api_port, metrics_port = free_port(), free_port(), free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = ["up", "--data-dir", str(data_dir), "--mqtt-port", str(mqtt_port), "--api-port", str(api_port)]
    args += ["--metrics-port", str(metrics_port), "--prometheus-port", "0"]
    env = {"EVENTPIPE_API_KEYS": key, "EVENTPIPE_MQTT_RECEIVE_MAXIMUM": str(window)}
    service = Service(args, env, data_dir.parent / f"{data_dir.name}-up.log")
    cleanup.callback(service.stop)
    service.wait_for("eventpipe ready")
    return service, mqtt_port, api_port
