"""What a replay takes in one go, and when a letter that failed is due again."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventpipe.events import Limits, codec, contract, timestamp
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


def test_a_failed_letter_is_due_again_once_the_code_that_parses_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The JSON reader moved out of the contract into events.codec: a change there (NaN accepted, say) must
    # make letters due again as a change to the contract does (found by a review: it did not).
    defaults = contract_of(Limits())
    real = Path.read_bytes
    for module in (contract, codec, timestamp):

        def changed(path: Path, _module_file: str = str(module.__file__)) -> bytes:
            return real(path) + b"\n# changed\n" if str(path) == _module_file else real(path)

        with monkeypatch.context() as patched:
            patched.setattr(Path, "read_bytes", changed)
            assert contract_of(Limits()) != defaults, module.__name__
