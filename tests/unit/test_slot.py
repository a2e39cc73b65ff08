"""Exports at once: a process bound, and half of it per key so one key cannot take them all."""

from __future__ import annotations

import pytest

from eventpipe.api.error import ApiError
from eventpipe.api.slot import Slots


def refused(slots: Slots, key: str) -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        slots.take(key)
    return caught.value.status, caught.value.error


def test_a_key_gets_half_the_slots_and_the_process_no_more_than_its_bound() -> None:
    slots = Slots(4)
    mine = [slots.take("a"), slots.take("a")]
    assert refused(slots, "a") == (429, "too_many_exports")
    theirs = [slots.take("b"), slots.take("b")]
    assert refused(slots, "c") == (503, "busy")
    mine.pop()()
    assert refused(slots, "b") == (429, "too_many_exports"), "a slot given back is not another key's share"
    slots.take("c")
    assert refused(slots, "c") == (503, "busy")
    assert theirs


def test_a_slot_given_back_twice_counts_once_and_a_bound_of_one_still_serves_one() -> None:
    slots = Slots(2)
    give_back = slots.take("a")
    give_back()
    give_back()
    slots.take("a")
    assert refused(slots, "a") == (429, "too_many_exports")
    slots.take("b")
    single = Slots(1)
    single.take("a")
    assert refused(single, "b") == (503, "busy")
