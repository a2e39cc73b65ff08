"""The batching and backoff policies, without any I/O."""

from __future__ import annotations

import pytest

from eventpipe.ingest.policy import Backoff, BatchPolicy


def test_an_empty_batch_waits_for_a_message() -> None:
    assert BatchPolicy(100, 0.2).wait_s(0, 0.0) is None


def test_a_full_batch_is_due_at_once() -> None:
    policy = BatchPolicy(100, 0.2)
    assert policy.wait_s(100, 0.0) == 0.0
    assert policy.wait_s(250, 0.0) == 0.0


def test_a_partial_batch_is_due_when_its_oldest_message_is_old_enough() -> None:
    policy = BatchPolicy(100, 0.2)
    assert policy.wait_s(1, 0.05) == pytest.approx(0.15)
    assert policy.wait_s(99, 0.2) == 0.0
    assert policy.wait_s(5, 3.0) == 0.0


def test_a_policy_that_can_never_flush_is_refused() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchPolicy(0, 0.2)
    with pytest.raises(ValueError, match="max_age_s"):
        BatchPolicy(10, 0)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(0.5, 30.0)
    assert [backoff.delay_s(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.delay_s(10_000) == 30.0


def test_jitter_only_shortens_the_delay_by_at_most_half() -> None:
    backoff = Backoff(1.0, 10.0)
    assert backoff.delay_s(2, jitter=1.0) == 2.0
    assert backoff.delay_s(2, jitter=0.5) == 3.0
