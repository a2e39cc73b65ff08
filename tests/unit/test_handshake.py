"""When a worker counts a broker session lost at its start: its session marks (ingest.mark), and the
judgement of a missing session at the first connect (ingest.handshake)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.ingest import mark
from eventpipe.ingest.handshake import check_first_session
from eventpipe.ingest.mark import SESSION_SUFFIX, Marker
from eventpipe.ingest.metrics import IngestMetrics

NOW_MS = 1_800_000_000_000


def test_a_connected_worker_marks_its_session_a_minute_apart_and_a_disconnected_one_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [NOW_MS]
    monkeypatch.setattr(mark, "_now_ms", lambda: clock[0])
    marker = Marker("w1")
    assert [m.worker for m in marker.due(NOW_MS, linked=False)] == ["w1"]
    clock[0] += 1_000
    marks = marker.due(NOW_MS, linked=True)
    assert [m.worker for m in marks] == ["w1", "w1" + SESSION_SUFFIX]
    assert marks[1].retired, "retired: the feed's complete_until and erasures pass it by"
    clock[0] += 30_000
    assert [m.worker for m in marker.due(NOW_MS, linked=True)] == ["w1"]
    clock[0] += 30_000
    assert [m.worker for m in marker.due(NOW_MS, linked=True)] == ["w1", "w1" + SESSION_SUFFIX]


@pytest.mark.parametrize(
    ("last_linked_ago_s", "broker_expiry_s", "lost"),
    [
        (None, None, False),  # never held one (a first start, or runs that never reached the broker)
        (30, None, True),  # a moment ago: the broker should have it
        (3_600, None, True),  # an hour ago, a week's expiry asked for
        (8 * 86_400, None, False),  # longer than the week asked for: expired
        (3 * 3_600, 2 * 3_600, False),  # the broker grants two hours only (EMQX's default cap): expired
    ],
)
def test_a_missing_session_at_the_first_connect_is_lost_only_within_the_expiry_the_broker_grants(
    last_linked_ago_s: int | None, broker_expiry_s: int | None, lost: bool, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = IngestMetrics(CollectorRegistry())
    last_ms = None if last_linked_ago_s is None else NOW_MS - last_linked_ago_s * 1000
    with caplog.at_level(logging.WARNING):
        check_first_session(Settings(), metrics, last_ms, broker_expiry_s, NOW_MS)
    assert metrics.sessions_lost._value.get() == (1 if lost else 0)
    assert (metrics.session_lost_at._value.get() > 0) is lost
    if last_ms is not None and not lost:
        assert "longer than its session lasts" in caplog.text
