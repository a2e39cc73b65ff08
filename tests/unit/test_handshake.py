"""When a worker counts a broker session lost at its start: its session marks (ingest.mark), and the
judgement of a missing session at a connect (ingest.handshake)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.ingest.clock import Clock
from eventpipe.ingest.handshake import check_first_session, check_missing_session
from eventpipe.ingest.mark import Marker, session_mark_name
from eventpipe.ingest.metrics import IngestMetrics

NOW_MS = 1_800_000_000_000
WEEK_S = 7 * 86_400


def test_a_connected_worker_marks_its_session_a_minute_apart_and_a_disconnected_one_never() -> None:
    clock = [NOW_MS]
    marker = Marker("w1", "w1#session-0123", Clock(lambda: clock[0]), tick=lambda: clock[0] / 1000)
    assert [m.worker for m in marker.due(NOW_MS, None)] == ["w1"]
    clock[0] += 1_000
    marks = marker.due(NOW_MS, WEEK_S)
    assert [m.worker for m in marks] == ["w1", "w1#session-0123"]
    assert marks[1].retired, "retired: the feed's complete_until and erasures pass it by"
    assert marks[1].complete_before == WEEK_S, "the session's expiry then, which its loss is judged by"
    clock[0] += 30_000
    assert [m.worker for m in marker.due(NOW_MS, WEEK_S)] == ["w1"]
    clock[0] += 30_000
    assert [m.worker for m in marker.due(NOW_MS, WEEK_S)] == ["w1", "w1#session-0123"]


def test_session_marks_are_named_per_session_and_broker_without_the_session_id() -> None:
    # A changed secret (another session id) or broker starts afresh: the old session keeps its queue.
    name = session_mark_name("w1", "w1-5f2a", "mosquitto:1883")
    assert name.startswith("w1#session-") and "5f2a" not in name
    assert name != session_mark_name("w1", "w1-9c0d", "mosquitto:1883")
    assert name != session_mark_name("w1", "w1-5f2a", "other:1883")
    assert name == session_mark_name("w1", "w1-5f2a", "mosquitto:1883")


@pytest.mark.parametrize(
    ("held_ago_s", "expiry_s", "lost"),
    [
        (None, None, False),  # never held one under this id and broker (a first start, runs never connected)
        (30, WEEK_S, True),  # a moment ago: the broker should have it
        (3_600, WEEK_S, True),  # an hour ago, a week's expiry
        (8 * 86_400, WEEK_S, False),  # longer than the week: expired
        (3 * 3_600, 2 * 3_600, False),  # the broker granted two hours (EMQX's default cap): expired
        (3 * 3_600, 3_600, False),  # an hour asked for then, whatever this start asks for
        (5, 0, False),  # a session that ends with its connection
    ],
)
def test_a_missing_session_at_the_first_connect_is_lost_only_within_the_expiry_it_had(
    held_ago_s: int | None, expiry_s: int | None, lost: bool, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = IngestMetrics(CollectorRegistry())
    held = None if held_ago_s is None or expiry_s is None else (NOW_MS - held_ago_s * 1000, expiry_s)
    with caplog.at_level(logging.WARNING):
        check_first_session(metrics, held, NOW_MS)
    assert metrics.sessions_lost._value.get() == (1 if lost else 0)
    assert (metrics.session_lost_at._value.get() > 0) is lost
    if held is not None and not lost:
        assert "longer than its session lasted" in caplog.text


def test_a_missing_session_on_a_reconnect_is_lost_whatever_the_marks_say() -> None:
    # The process held the session moments ago on its last connection: nothing could have expired it.
    metrics = IngestMetrics(CollectorRegistry())
    check_missing_session(metrics, 2, None, NOW_MS)
    assert metrics.sessions_lost._value.get() == 1
    # At the first connect the marks decide: none, nothing counted.
    check_missing_session(metrics, 1, None, NOW_MS)
    assert metrics.sessions_lost._value.get() == 1
    check_missing_session(metrics, 1, (NOW_MS - 30_000, WEEK_S), NOW_MS)
    assert metrics.sessions_lost._value.get() == 2
