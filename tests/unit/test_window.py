"""Windows of time holding about a number of rows, estimated from parts' ranges and row counts."""

from __future__ import annotations

from eventpipe.store.window import Windows

YEAR_MS = 365 * 86_400_000


def test_a_window_ends_where_its_rows_are_estimated_to_pass_the_number() -> None:
    windows = Windows([(0, 1_000, 1_000)], rows=100)  # one row a millisecond
    assert windows.end(0) == 101
    assert windows.end(500) == 601


def test_years_without_data_are_crossed_in_one_window() -> None:
    windows = Windows([(0, 10, 10), (10 * YEAR_MS, 10 * YEAR_MS + 10, 10)], rows=15)
    assert windows.end(0) == 10 * YEAR_MS + 6


def test_the_rest_of_time_is_one_window_once_it_holds_no_more_than_the_number() -> None:
    windows = Windows([(0, 1_000, 1_000), (2_000, 3_000, 0)], rows=100)
    assert windows.end(950) is None
    assert windows.end(5_000) is None
    assert windows.oldest == 0  # parts with no rows count for nothing
    assert Windows([], rows=100).end(0) is None
