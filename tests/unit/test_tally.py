"""The tally's policy: which buckets are counted again, without any I/O."""

from __future__ import annotations

from eventpipe.store.tally import DAY_MS, HOUR_MS, Part, Tally, added, coverable, signatures

MONDAY = 20_000  # a day number: days since the epoch
DAY_S = DAY_MS // 1000


def part(name: str, first_day: int, last_day: int, first_s: int = 0, last_s: int = DAY_S - 1) -> Part:
    return Part(name, first_day * DAY_S + first_s, last_day * DAY_S + last_s)


def test_a_day_is_signed_by_every_part_whose_range_touches_it() -> None:
    parts = [part("b_2_2_0", MONDAY, MONDAY + 2), part("a_1_1_0", MONDAY + 2, MONDAY + 2, 3600, 7200)]
    assert signatures(parts, DAY_MS) == {
        MONDAY: ("b_2_2_0",),
        MONDAY + 1: ("b_2_2_0",),
        MONDAY + 2: ("a_1_1_0", "b_2_2_0"),
    }


def test_a_part_ending_in_the_last_second_of_a_bucket_does_not_touch_the_next() -> None:
    assert set(signatures([part("p", MONDAY, MONDAY)], DAY_MS)) == {MONDAY}
    # min_time and max_time are whole seconds: a row at 00:59:59.999 is in hour 0.
    assert set(signatures([part("p", MONDAY, MONDAY, 0, 3599)], HOUR_MS)) == {MONDAY * 24}


def test_only_the_buckets_of_a_window_are_signed() -> None:
    hours = signatures([part("p", MONDAY, MONDAY + 30)], HOUR_MS, MONDAY * 24 + 5, MONDAY * 24 + 8)
    assert sorted(hours) == [MONDAY * 24 + 5, MONDAY * 24 + 6, MONDAY * 24 + 7]


def test_a_kept_bucket_is_used_while_its_parts_are_the_same() -> None:
    tally = Tally()
    tally.keep(MONDAY, ("p1",), {"click": 3})
    assert tally.kept({MONDAY: ("p1",)}) == {MONDAY: {"click": 3}}


def test_a_new_part_or_a_merge_makes_the_bucket_count_again() -> None:
    tally = Tally()
    tally.keep(MONDAY, ("p1", "p2"), {"click": 3})
    assert tally.kept({MONDAY: ("p1", "p2", "p3")}) == {}  # an insert
    assert tally.kept({MONDAY: ("p1_2",)}) == {}  # the parts merged


def test_beyond_its_size_the_least_recently_used_buckets_make_room() -> None:
    tally = Tally(max_entries=4)
    tally.keep(MONDAY, ("p1",), {"a": 1, "b": 1})
    tally.keep(MONDAY + 1, ("p2",), {"a": 1, "b": 1})
    assert tally.kept({MONDAY: ("p1",)}) == {MONDAY: {"a": 1, "b": 1}}  # now the most recently used
    tally.keep(MONDAY + 2, ("p3",), {"a": 1})
    wanted = {MONDAY: ("p1",), MONDAY + 1: ("p2",), MONDAY + 2: ("p3",)}
    assert set(tally.kept(wanted)) == {MONDAY, MONDAY + 2}


def test_a_bucket_bigger_than_the_whole_tally_is_not_kept() -> None:
    tally = Tally(max_entries=1)
    tally.keep(MONDAY, ("p1",), {"a": 1, "b": 1})
    assert tally.kept({MONDAY: ("p1",)}) == {}


def test_a_recount_replaces_what_was_kept() -> None:
    tally = Tally(max_entries=2)
    tally.keep(MONDAY, ("p1",), {"a": 1, "b": 1})
    tally.keep(MONDAY, ("p1", "p2"), {"a": 2, "c": 1})
    assert tally.kept({MONDAY: ("p1", "p2")}) == {MONDAY: {"a": 2, "c": 1}}


def test_parts_without_a_time_range_cannot_be_tallied() -> None:
    assert coverable([part("p", MONDAY, MONDAY)])
    assert not coverable([part("p", MONDAY, MONDAY), Part("old", 0, 0)])


def test_buckets_add_up_by_type() -> None:
    assert added([{"a": 1, "b": 2}, {}, {"a": 3}]) == {"a": 4, "b": 2}
