"""The all-time tally's policy: which days are counted again, without any I/O."""

from __future__ import annotations

from eventpipe.store.tally import DAY_S, Part, Tally, added, coverable, day_signatures

MONDAY = 20_000  # a day number: days since the epoch


def part(name: str, first_day: int, last_day: int, first_s: int = 0, last_s: int = DAY_S - 1) -> Part:
    return Part(name, first_day * DAY_S + first_s, last_day * DAY_S + last_s)


def test_a_day_is_signed_by_every_part_whose_range_touches_it() -> None:
    parts = [part("b_2_2_0", MONDAY, MONDAY + 2), part("a_1_1_0", MONDAY + 2, MONDAY + 2, 3600, 7200)]
    assert day_signatures(parts) == {
        MONDAY: ("b_2_2_0",),
        MONDAY + 1: ("b_2_2_0",),
        MONDAY + 2: ("a_1_1_0", "b_2_2_0"),
    }


def test_a_part_ending_at_the_last_second_of_a_day_does_not_touch_the_next() -> None:
    assert set(day_signatures([part("p", MONDAY, MONDAY)])) == {MONDAY}


def test_a_kept_day_is_used_while_its_parts_are_the_same() -> None:
    tally = Tally()
    tally.keep(MONDAY, ("p1",), {"click": 3})
    assert tally.kept({MONDAY: ("p1",)}) == {MONDAY: {"click": 3}}


def test_a_new_part_or_a_merge_makes_the_day_count_again() -> None:
    tally = Tally()
    tally.keep(MONDAY, ("p1", "p2"), {"click": 3})
    assert tally.kept({MONDAY: ("p1", "p2", "p3")}) == {}  # an insert
    assert tally.kept({MONDAY: ("p1_2",)}) == {}  # the parts merged


def test_days_no_part_holds_any_more_are_forgotten() -> None:
    tally = Tally()
    tally.keep(MONDAY, ("p1",), {"click": 3})
    tally.keep(MONDAY + 1, ("p2",), {"view": 1})
    assert tally.kept({MONDAY + 1: ("p2",)}) == {MONDAY + 1: {"view": 1}}
    assert tally.kept({MONDAY: ("p1",)}) == {}  # dropped, not kept for later


def test_beyond_its_size_the_tally_keeps_nothing_more_but_forgets_to_make_room() -> None:
    tally = Tally(max_entries=3)
    tally.keep(MONDAY, ("p1",), {"a": 1, "b": 1})
    tally.keep(MONDAY + 1, ("p2",), {"a": 1, "b": 1})  # would hold 4 pairs
    assert tally.kept({MONDAY: ("p1",), MONDAY + 1: ("p2",)}) == {MONDAY: {"a": 1, "b": 1}}
    tally.kept({MONDAY + 1: ("p2",)})  # MONDAY's part is gone
    tally.keep(MONDAY + 1, ("p2",), {"a": 1, "b": 1})
    assert tally.kept({MONDAY + 1: ("p2",)}) == {MONDAY + 1: {"a": 1, "b": 1}}


def test_a_recount_replaces_what_was_kept() -> None:
    tally = Tally(max_entries=2)
    tally.keep(MONDAY, ("p1",), {"a": 1, "b": 1})
    tally.keep(MONDAY, ("p1", "p2"), {"a": 2, "c": 1})
    assert tally.kept({MONDAY: ("p1", "p2")}) == {MONDAY: {"a": 2, "c": 1}}


def test_parts_without_a_time_range_cannot_be_tallied() -> None:
    assert coverable([part("p", MONDAY, MONDAY)])
    assert not coverable([part("p", MONDAY, MONDAY), Part("old", 0, 0)])


def test_days_add_up_by_type() -> None:
    assert added([{"a": 1, "b": 2}, {}, {"a": 3}]) == {"a": 4, "b": 2}
