"""What a replay takes in one go, and when a letter that failed is due again."""

from __future__ import annotations

from eventpipe.events import Limits
from eventpipe.ingest.replay import _chunks, contract_of
from eventpipe.store.outcome import Candidate


def test_payloads_are_read_in_chunks_of_bounded_size_and_a_big_one_alone() -> None:
    sizes = [40, 40, 30, 500, 10, 90, 5]
    chunks = _chunks([Candidate(f"d{i}", size) for i, size in enumerate(sizes)], 100)
    assert chunks == [["d0", "d1"], ["d2"], ["d3"], ["d4", "d5"], ["d6"]]
    assert _chunks([], 100) == []


def test_a_failed_letter_is_due_again_once_a_limit_changes_and_not_before() -> None:
    defaults = contract_of(Limits())
    assert contract_of(Limits()) == defaults
    assert contract_of(Limits(max_past_ms=0)) == defaults  # the defaults of Limits
    for changed in (
        Limits(max_past_ms=86_400_000),
        Limits(envelope_keys=("event_data", "data", "payload")),
        Limits(max_payload_bytes=1 << 20),
        Limits(max_depth=64),
        Limits(max_future_skew_ms=0),
    ):
        assert contract_of(changed) != defaults, changed
