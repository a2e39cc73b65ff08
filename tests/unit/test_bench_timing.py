"""bench.query.timed: the reads of one side are timed in turn, so whatever happens meanwhile lands on all alike."""

from __future__ import annotations

from eventpipe.bench.query import WARMUP, timed


def test_reads_are_timed_in_turn_not_one_after_another() -> None:
    calls: list[str] = []
    runs = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    samples = timed(runs, seconds=0.0, at_least=4, at_most=100)
    timed_calls = calls[WARMUP * 3 :]
    assert timed_calls == ["a", "b", "c"] * 4
    assert {name: len(taken) for name, taken in samples.items()} == {"a": 4, "b": 4, "c": 4}


def test_every_read_stops_at_its_most_however_long_the_time() -> None:
    runs = {"a": lambda: None, "b": lambda: None}
    samples = timed(runs, seconds=3600.0, at_least=1, at_most=7)
    assert [len(taken) for taken in samples.values()] == [7, 7]


def test_no_reads_time_nothing() -> None:
    assert timed({}, seconds=1.0, at_least=1, at_most=5) == {}
