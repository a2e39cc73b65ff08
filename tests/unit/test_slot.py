"""Answers at once: a process bound, and a share of it per key so one key cannot take them all."""

from __future__ import annotations

import pytest

from eventpipe.api.error import ApiError
from eventpipe.api.export import slots as exports
from eventpipe.api.slot import Slots


def refused(slots: Slots, key: str) -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        slots.take(key)
    return caught.value.status, caught.value.error


def test_a_key_gets_half_the_slots_and_the_process_no_more_than_its_bound() -> None:
    slots = exports(4)
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
    slots = exports(2)
    give_back = slots.take("a")
    give_back()
    give_back()
    slots.take("a")
    assert refused(slots, "a") == (429, "too_many_exports")
    slots.take("b")
    single = exports(1)
    single.take("a")
    assert refused(single, "b") == (503, "busy")


def test_a_share_larger_than_the_bound_is_the_bound_and_refusals_name_what_to_change() -> None:
    slots = Slots(2, 8, "requests", "EVENTPIPE_API_MAX_REQUESTS", 1)
    held = [slots.take("a"), slots.take("a")]
    with pytest.raises(ApiError) as caught:
        slots.take("a")
    assert (caught.value.status, caught.value.error) == (429, "too_many_requests")
    assert caught.value.headers == {"Retry-After": "1"}
    with pytest.raises(ApiError) as caught:
        slots.take("b")
    assert caught.value.status == 503 and "EVENTPIPE_API_MAX_REQUESTS" in caught.value.detail
    held.pop()()
    slots.take("b")


def test_the_metrics_say_which_keys_hold_the_slots_a_refused_client_waits_for() -> None:
    # Found by an attack: behind a 503 busy, the runbook's request rate by key put the refused key first,
    # and the partner reading 4 exports slowly at 0.007 requests a second.
    slots = exports(4)

    def running() -> dict[str, float]:
        (family,) = slots.collect()
        assert family.name == "eventpipe_api_exports_running"
        return {sample.labels["key"]: sample.value for sample in family.samples}

    assert running() == {}
    held = [slots.take("partner-a"), slots.take("partner-a"), slots.take("partner-b")]
    assert running() == {"partner-a": 2, "partner-b": 1}
    held[0]()
    held[2]()
    assert running() == {"partner-a": 1}
