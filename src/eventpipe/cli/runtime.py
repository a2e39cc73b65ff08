"""What every long-running command shares: logging, signals, the metrics endpoint."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from eventpipe.errors import ConfigError
from eventpipe.port import unlistenable
from eventpipe.redaction import RedactingFormatter
from eventpipe.telemetry.exporter import Exporter

log = logging.getLogger("eventpipe")
LINE = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(level: str) -> None:
    # Every line passes through redaction: a URL or DSN logged by eventpipe,
    # a library or a traceback never shows its password.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LINE)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    threading.excepthook = _log_thread_crash
    # paho and uvicorn are chatty at INFO about things eventpipe already reports.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # ClickHouse's driver and its HTTP pool warn of each failed attempt, in their words, before the failure
    # reaches eventpipe, which says it once, classified and naming the DSN's setting (store.failure). At
    # DEBUG they say all they say.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for chatty in ("urllib3.connectionpool", "clickhouse_connect.driver._backend.http_sync"):
            logging.getLogger(chatty).setLevel(logging.ERROR)


def warn_password_flag(command: str, flag: str, url: str, variable: str) -> None:
    """Say that a password given in `flag` is readable by others, and where to put it instead."""
    try:
        password = urlsplit(url).password
    except ValueError:  # unreadable: the command refuses it, without quoting it
        return
    if password:
        print(
            f"eventpipe {command}: warning: the password in {flag} shows in `ps` to every user of this machine "
            f"and stays in your shell's history; set {variable} instead",
            file=sys.stderr,
            flush=True,
        )


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    # Through the logging handler rather than straight to stderr, so it is redacted too.
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    log.error("%s stopped on an unexpected error: %s", name, args.exc_type.__name__, exc_info=args.exc_value)


class Shutdown:
    """Turns SIGTERM, SIGINT and SIGHUP into a stop request; a second signal, later than a moment after the
    first, forces the exit. SIGHUP comes when the terminal `eventpipe up` runs in is closed: by default it
    killed the process on the spot, and what the worker held came back as redeliveries instead of being
    committed.

    The handler runs on the main thread between any two bytecodes, possibly inside a lock that thread
    holds or a write to stderr it is making: it takes no lock and uses no logging, only records the signal;
    the interpreter wakes `wait` through a pipe. It used to set a threading.Event, whose own lock the main thread holds
    for a moment on each pass of waiting on it: a SIGTERM landing in that moment hung the process for good
    (seen in CI; in a tight loop of waits, within a few stops)."""

    # Some supervisors deliver one stop twice at once (to the process and to
    # its group); only a signal that comes later means "hurry up".
    REPEAT_GRACE_S = 2.0

    def __init__(self, doing: str = "flushing, acknowledging and stopping") -> None:
        """`doing`: what the process does once told to stop, for its log line."""
        self.on_force: Callable[[], None] | None = None
        self._doing = doing
        self._signal: int | None = None
        self._first_at = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        # poll, not select: the process holds many files (the embedded engine's), and select() refuses a
        # descriptor past 1023.
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1

    def install(self) -> None:
        """On the main thread. The pipe is the interpreter's wakeup fd: it writes a byte there as a signal comes,
        before the handler runs, so `wait` wakes even when the handler runs only after poll() started
        sleeping, or when the signal was delivered to another thread."""
        handled = [signal.SIGTERM, signal.SIGINT]
        # Unless ignored, as `nohup` leaves it: such a process is meant to outlive the terminal.
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            handled.append(signal.SIGHUP)
        for number in handled:
            self._previous[number] = signal.signal(number, self._handle)
        self._previous_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def requested(self) -> bool:
        return self._signal is not None

    def close(self) -> None:
        """For a process that makes more than one (tests): the handlers and wakeup fd it replaced come back
        before its pipe closes, so no signal writes to a reused descriptor."""
        if self._previous:
            signal.set_wakeup_fd(self._previous_wakeup)
            for number, handler in self._previous.items():
                signal.signal(number, handler)
        os.close(self._wake_w)
        os.close(self._wake_r)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._signal is None:
            self._first_at = time.monotonic()
            self._signal = signum
            return
        if time.monotonic() - self._first_at < self.REPEAT_GRACE_S:
            return
        # Safe to cut short: whatever was not acknowledged stays with the broker. Nothing may keep the exit from
        # happening: not an error in on_force, not a stderr nobody reads (a stalled log collector is a likely
        # reason for the second signal), so the line is written only if it can go out without waiting.
        try:  # an error in on_force goes nowhere: the exit in `finally` ends the process first
            if self.on_force is not None:
                self.on_force()
        finally:
            name = signal.Signals(signum).name
            _say_if_room(f"second {name}: exiting now; unacknowledged messages will be redelivered")
            os._exit(1)

    def wait(self, still_fine: Callable[[], str | None], interval: float = 0.5) -> str | None:
        """Block until a signal (returns None) or until `still_fine` reports a problem (returns it)."""
        while self._signal is None:
            # A signal between the check and poll() finds the pipe written (the wakeup fd): poll() returns at once.
            if self._poller.poll(interval * 1000):
                os.read(self._wake_r, 64)  # any signal's wake-up: only a stop signal sets _signal
                continue
            if self._signal is not None:  # came as poll() timed out: a stop, not a problem to report
                break
            problem = still_fine()
            if problem:
                return problem
        log.info("%s received: %s", signal.Signals(self._signal).name, self._doing)
        return None


def _say_if_room(message: str) -> None:
    """An ERROR line on fd 2, from a signal handler: past logging's locks and stderr's buffer, and not at all
    when fd 2 could not take it at once (a line under PIPE_BUF then goes in whole)."""
    writable = select.poll()
    writable.register(2, select.POLLOUT)
    with contextlib.suppress(OSError):
        if writable.poll(0):
            record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), None)
            os.write(2, (LINE.format(record) + "\n").encode()[: select.PIPE_BUF])


def process_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory, file descriptors and GC: one per OS process."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    api: CollectorRegistry | None = None,
    broker: CollectorRegistry | None = None,
    flag: str = "",
) -> Exporter:
    """The process's metrics listener (EVENTPIPE_METRICS_HOST, EVENTPIPE_METRICS_PORT), started; with `api`
    and `broker`, also the API's and the broker's registries, each on its own path (telemetry.exporter).
    `flag`: the command's own option for the port, named beside the variable in an error."""
    server = Exporter(registry, host, port, api=api, broker=broker)
    try:
        server.start()
    except OSError as exc:
        if (cause := unlistenable(host)) is not None:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {cause}; set EVENTPIPE_METRICS_HOST to a name or "
                "address of this host"
            ) from exc
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror}; pick another port "
            f"(EVENTPIPE_METRICS_PORT{f', or {flag}' if flag else ''})"
        ) from exc
    return server


class Progress:
    """Logs what was committed since the last report, at most every `every` seconds, only when it moved."""

    SERIES = ("eventpipe_events_stored_total", "eventpipe_messages_received_total")

    def __init__(self, registry: CollectorRegistry, every: float = 10.0) -> None:
        self._registry = registry
        self._every = every
        self._last_time = time.monotonic()
        self._last = self._read()

    def _read(self) -> tuple[float, float, float]:
        stored, received = (self._registry.get_sample_value(name) or 0.0 for name in self.SERIES)
        dead = sum(
            sample.value
            for metric in self._registry.collect()
            if metric.name == "eventpipe_dead_letters"
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        return stored, dead, received

    def report(self) -> None:
        now = time.monotonic()
        if now - self._last_time < self._every:
            return
        current = self._read()
        if current != self._last:
            stored, dead, received = (c - p for c, p in zip(current, self._last, strict=True))
            log.info(
                "last %.0fs: %d received, %d events stored, %d dead letters (totals: %d stored, %d dead letters)",
                now - self._last_time,
                received,
                stored,
                dead,
                current[0],
                current[1],
            )
        self._last, self._last_time = current, now
