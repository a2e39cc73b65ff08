"""The rate policy of API keys, on an injected clock: at most N requests in any 60 seconds."""

from __future__ import annotations

import pytest

from eventpipe.api.throttle import Throttle, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_n_requests_pass_and_the_next_waits_until_the_first_is_a_minute_old(clock: Clock) -> None:
    throttle = Throttle(clock)
    for second in range(5):
        clock.now = 1000.0 + second
        assert throttle.admit("partner", 5) == 0.0
    clock.now = 1010.0
    assert throttle.admit("partner", 5) == pytest.approx(50.0)  # the first was at 1000
    clock.now = 1059.999
    assert throttle.admit("partner", 5) > 0
    clock.now = 1060.0
    assert throttle.admit("partner", 5) == 0.0
    assert throttle.admit("partner", 5) == pytest.approx(1.0)  # the second was at 1001


def test_no_minute_ever_holds_more_than_the_limit(clock: Clock) -> None:
    # A token bucket of N refilled at N a minute lets 2N through in the minute after an idle one.
    throttle = Throttle(clock)
    admitted = []
    for tick in range(0, 1200):  # a request every 0.25 s (exact in binary) for 5 minutes
        clock.now = 1000.0 + tick / 4
        if throttle.admit("busy", 120) == 0.0:
            admitted.append(clock.now)
    for start in admitted:
        assert sum(1 for moment in admitted if start <= moment < start + 60) <= 120
    assert len(admitted) == 5 * 120


def test_refused_requests_do_not_count(clock: Clock) -> None:
    throttle = Throttle(clock)
    assert throttle.admit("k", 1) == 0.0
    for second in range(1, 60):
        clock.now = 1000.0 + second
        assert throttle.admit("k", 1) == pytest.approx(60.0 - second)
    clock.now = 1060.0
    assert throttle.admit("k", 1) == 0.0, "a client that waited as told passes, however often it asked meanwhile"


def test_a_request_given_back_does_not_count(clock: Clock) -> None:
    # A request refused for want of a seat or an export slot used up the key's rate (an attack).
    throttle = Throttle(clock)
    assert throttle.admit("k", 2) == 0.0
    clock.now += 1
    assert throttle.admit("k", 2) == 0.0
    throttle.give_back("k")
    assert throttle.admit("k", 2) == 0.0, "the second went back"
    assert throttle.admit("k", 2) == pytest.approx(59.0), "the first still counts"
    throttle.give_back("unknown")


def test_keys_have_their_own_windows_and_no_limit_means_none(clock: Clock) -> None:
    throttle = Throttle(clock)
    assert throttle.admit("a", 1) == 0.0
    assert throttle.admit("a", 1) > 0
    assert throttle.admit("b", 1) == 0.0
    assert all(throttle.admit("c", None) == 0.0 for _ in range(10_000))


def test_a_changed_limit_keeps_the_recent_requests(clock: Clock) -> None:
    throttle = Throttle(clock)
    for _ in range(10):
        assert throttle.admit("k", 10) == 0.0
    assert throttle.admit("k", 5) > 0, "lowering the limit is no way to a fresh window"
    assert throttle.admit("k", 20) == 0.0, "raising it lets the difference through"
    for _ in range(9):
        throttle.admit("k", 20)
    assert throttle.admit("k", 20) > 0


def test_a_removed_key_forgets_its_window(clock: Clock) -> None:
    throttle = Throttle(clock)
    assert throttle.admit("gone", 1) == 0.0
    assert throttle.admit("kept", 1) == 0.0
    throttle.keep_only(["kept"])
    assert throttle.admit("gone", 1) == 0.0
    assert throttle.admit("kept", 1) > 0


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert [retry_after(wait) for wait in (0.001, 1.0, 1.2, 59.9)] == [1, 1, 2, 60]
