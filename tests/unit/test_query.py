"""store.query's pure helpers: lists of bound values cut to what one HTTP form field carries."""

from __future__ import annotations

from eventpipe.store.query import parameter_chunks


def test_chunks_keep_order_and_stay_under_the_cap() -> None:
    values = [f"id-{n}" * (1 + n % 5) for n in range(200)]
    chunks = list(parameter_chunks(values, len, limit=60))
    assert [value for chunk in chunks for value in chunk] == values
    assert all(sum(map(len, chunk)) <= 60 for chunk in chunks)
    assert len(chunks) > 10


def test_a_value_over_the_cap_goes_alone_and_nothing_is_dropped() -> None:
    values = ["a" * 10, "b" * 100, "c" * 10]
    assert list(parameter_chunks(values, len, limit=50)) == [["a" * 10], ["b" * 100], ["c" * 10]]
    assert list(parameter_chunks([], len, limit=50)) == []
