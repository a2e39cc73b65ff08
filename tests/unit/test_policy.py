"""The batching and backoff policies, without any I/O."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventpipe.ingest.policy import Backoff, BatchPolicy, leading

MiB = 1024 * 1024


def test_an_empty_batch_waits_for_a_message() -> None:
    assert BatchPolicy(100, 0.2, MiB).wait_s(0, 0, 0.0) is None


def test_a_full_batch_is_due_at_once() -> None:
    policy = BatchPolicy(100, 0.2, MiB)
    assert policy.wait_s(100, 100, 0.0) == 0.0
    assert policy.wait_s(250, 250, 0.0) == 0.0


def test_a_partial_batch_is_due_when_its_oldest_message_is_old_enough() -> None:
    policy = BatchPolicy(100, 0.2, MiB)
    assert policy.wait_s(1, 10, 0.05) == pytest.approx(0.15)
    assert policy.wait_s(99, 990, 0.2) == 0.0
    assert policy.wait_s(5, 50, 3.0) == 0.0


def test_a_batch_holding_max_bytes_is_due_at_once_however_few_its_rows() -> None:
    # Else a window full of large messages, far fewer than max_rows, would wait for the timer.
    policy = BatchPolicy(20_000, 0.2, 8 * MiB)
    assert policy.wait_s(128, 8 * MiB, 0.0) == 0.0
    assert policy.wait_s(200, 12 * MiB, 0.01) == 0.0
    assert policy.wait_s(127, 8 * MiB - 1, 0.05) == pytest.approx(0.15)


def unread() -> Iterator[int]:
    raise AssertionError("the sizes were read although the held bytes fit in a batch")
    yield 0  # a generator, so that only reading it raises


def test_a_batch_takes_max_rows_while_its_bytes_fit_without_reading_each_size() -> None:
    # The worker's common case (small events): no walk over the held messages.
    policy = BatchPolicy(3, 0.2, 100)
    assert policy.take(40, unread()) == 3
    assert policy.take(100, unread()) == 3


def test_a_batch_stops_before_the_message_that_would_pass_max_bytes() -> None:
    policy = BatchPolicy(1000, 0.2, 100)
    assert policy.take(180, iter([60, 30, 50, 40])) == 2
    assert policy.take(200, iter([50, 50, 50, 50])) == 2
    assert BatchPolicy(3, 0.2, 100).take(400, iter([1] * 400)) == 3


def test_a_message_larger_than_max_bytes_still_makes_a_batch() -> None:
    # Half the held-bytes budget may be less than one message: it goes alone, never waits for ever.
    assert BatchPolicy(1000, 0.2, 100).take(300, iter([150, 150])) == 1


def test_leading_counts_what_fits_in_rows_and_bytes() -> None:
    assert leading([10, 20, 30], 5, 100) == (3, 60)
    assert leading([10, 20, 30], 2, 100) == (2, 30)
    assert leading([10, 20, 30], 5, 29) == (1, 10)
    assert leading([50], 5, 49) == (0, 0)
    assert leading([], 5, 100) == (0, 0)


def test_a_policy_that_can_never_flush_is_refused() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchPolicy(0, 0.2, MiB)
    with pytest.raises(ValueError, match="max_age_s"):
        BatchPolicy(10, 0, MiB)
    with pytest.raises(ValueError, match="max_bytes"):
        BatchPolicy(10, 0.2, 0)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(0.5, 30.0)
    assert [backoff.delay_s(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.delay_s(10_000) == 30.0


def test_jitter_only_shortens_the_delay_by_at_most_half() -> None:
    backoff = Backoff(1.0, 10.0)
    assert backoff.delay_s(2, jitter=1.0) == 2.0
    assert backoff.delay_s(2, jitter=0.5) == 3.0
