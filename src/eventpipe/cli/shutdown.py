"""How a long-running command is told to stop: signals turned into a request, and a second one into an exit."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from eventpipe.cli.console import LINE

log = logging.getLogger("eventpipe")


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
