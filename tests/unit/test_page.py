"""Which windows a page of events tries first, and where the page after it starts (store/page.py)."""

from __future__ import annotations

from eventpipe.store.page import WINDOWS_MS, Extent, Position, resume, windows
from eventpipe.store.query import EventFilter

NOW_MS = 1_800_000_000_000
DAY_MS, MONTH_MS = WINDOWS_MS


def test_the_newest_page_tries_the_last_day_then_the_last_32_days_then_everything() -> None:
    where = EventFilter(event_type="click")
    assert windows(where, None, NOW_MS) == [
        where._replace(since_ms=NOW_MS - DAY_MS),
        where._replace(since_ms=NOW_MS - MONTH_MS),
        where,
    ]


def test_a_later_page_and_an_until_narrow_below_where_they_end_not_below_now() -> None:
    after = Position(NOW_MS - 10 * DAY_MS, "e-1", "click")
    assert windows(EventFilter(), after, NOW_MS)[0].since_ms == after.time_ms - DAY_MS
    until = NOW_MS - 100 * DAY_MS
    assert windows(EventFilter(until_ms=until), None, NOW_MS)[0].since_ms == until - DAY_MS


def test_a_window_no_narrower_than_the_asked_since_is_not_tried() -> None:
    # The last hour asked for: a day's window would be the same read twice.
    where = EventFilter(since_ms=NOW_MS - 3_600_000)
    assert windows(where, None, NOW_MS) == [where]
    within_a_month = EventFilter(since_ms=NOW_MS - 2 * DAY_MS)
    assert windows(within_a_month, None, NOW_MS) == [within_a_month._replace(since_ms=NOW_MS - DAY_MS), within_a_month]


def test_one_users_page_is_read_whole_at_once() -> None:
    # A user's newest events may be months old: each window would be one query more.
    where = EventFilter(user_id="u1")
    assert windows(where, None, NOW_MS) == [where]


def test_the_next_page_starts_after_the_last_row_served_and_there_is_none_after_the_last() -> None:
    last = Position(NOW_MS, "e-100")
    # A full page whose rows were all served: the next starts after its last.
    assert resume(Extent(candidates=100, kept=100, last=last), 100, 100, last) == last
    # The byte cap kept fewer than the limit: more follow from the last kept.
    assert resume(Extent(candidates=100, kept=40, last=last), 100, 40, last) == last
    # Fewer rows than asked and all kept: the end.
    assert resume(Extent(candidates=7, kept=7, last=last), 100, 7, last) is None


def test_rows_stored_in_the_page_since_its_extent_push_the_next_page_back_to_the_last_served() -> None:
    # A late event landed inside the range: the page served as many rows as the extent kept, ending on a newer
    # row, and the one pushed out comes next, also when the extent saw no more rows after its own.
    extent_end, served_last = Position(NOW_MS, "e-100"), Position(NOW_MS + 5, "e-99")
    assert resume(Extent(candidates=7, kept=7, last=extent_end), 100, 7, served_last) == served_last
    # Fewer rows served than kept (erased meanwhile): the page goes on past the extent's end, or ends with it.
    assert resume(Extent(candidates=100, kept=100, last=extent_end), 100, 99, served_last) == extent_end
    assert resume(Extent(candidates=7, kept=7, last=extent_end), 100, 6, served_last) is None
