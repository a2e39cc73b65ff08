"""One data operation at a time, each waited for only so long (store.turn)."""

from __future__ import annotations

import threading
import time

import pytest

from eventpipe.errors import BusyStorageError
from eventpipe.store.turn import Turn


def held(turn: Turn, what: str) -> tuple[threading.Event, threading.Thread]:
    """A thread that holds `turn` for `what` until the event is set."""
    release, taken = threading.Event(), threading.Event()

    def hold() -> None:
        with turn.taken(what):
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    return release, thread


def test_one_waiting_past_the_bound_is_told_what_runs_and_to_retry() -> None:
    turn = Turn(wait_s=0.3)
    release, thread = held(turn, "a backup")
    started = time.monotonic()
    told = r"^an erasure waited 0.3 s for its turn and a backup has run for \d+ s"
    with pytest.raises(BusyStorageError, match=told), turn.taken("an erasure"):
        pytest.fail("ran beside the backup")
    assert 0.25 < time.monotonic() - started < 5
    release.set()
    thread.join()
    with turn.taken("an erasure"):  # free once the backup has ended
        pass


def test_those_asked_for_together_run_one_after_another_within_the_bound() -> None:
    turn, running, most = Turn(wait_s=10), [0], [0]
    lock = threading.Lock()

    def operation() -> None:
        with turn.taken("a replay"):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=operation) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == [1]


def test_an_operation_that_fails_gives_its_turn_back() -> None:
    turn = Turn(wait_s=0.1)
    with pytest.raises(RuntimeError), turn.taken("a restore"):
        raise RuntimeError("the restore failed")
    with turn.taken("a backup"):
        pass
