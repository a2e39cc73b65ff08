"""The API's JSON of an event, written by hand for speed: the same text json.dumps writes, for any value, but
for three characters some readers break lines at, escaped."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventpipe.api.model import DeadLetter, DeadLetterPage, event_text, json_response, rfc3339
from eventpipe.events import Event
from eventpipe.store.row import StoredDeadLetter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The API's time range: 1970 up to 10^13 ms (2286), DateTime64(3)'s end well beyond.
INSTANTS = st.integers(min_value=0, max_value=10**13 - 1)
# Any text a column can hold: every control character, quotes, backslashes, U+2028, astral characters.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(INSTANTS)
@settings(deadline=None)  # a loaded machine (another test process) may take over 200 ms for one
@example(0)
@example(951_782_400_000)  # 2000-02-29, a leap day
@example(9_694_097_089_522)  # 2277: a float of seconds made this .521
@example(10**13 - 1)
def test_times_are_rfc3339_utc_to_the_millisecond(epoch_ms: int) -> None:
    moment = EPOCH + timedelta(milliseconds=epoch_ms)
    assert rfc3339(epoch_ms) == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
    assert datetime.fromisoformat(rfc3339(epoch_ms)) == moment


@given(TEXT, TEXT, INSTANTS, INSTANTS, st.none() | TEXT, TEXT)
@settings(deadline=None)
@example('\x00\x1f"\\/', "é🙂\u2028\u2029\x7f", 0, 1, None, "events/a")
@example("a\u2028b", "\x85", 0, 1, "\\\u2029", "events/\u2028")
def test_an_event_is_what_json_dumps_writes(
    event_id: str, event_type: str, timestamp_ms: int, received_ms: int, user_id: str | None, topic: str
) -> None:
    properties = json.dumps({"note": event_id, "n": [1, None]}, separators=(",", ":"), ensure_ascii=False)
    stored = Event(event_id, event_type, timestamp_ms, received_ms, user_id, topic, properties)
    fields = {
        "event_id": event_id,
        "event_type": event_type,
        "timestamp": rfc3339(timestamp_ms),
        "received_at": rfc3339(received_ms),
        "user_id": user_id,
        "topic": topic,
        "properties": json.loads(properties),
    }
    text = event_text(stored)
    # What json.dumps writes, but for the characters line splitters break at, which it leaves raw.
    dumped = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    for char in "\x85\u2028\u2029":
        dumped = dumped.replace(char, f"\\u{ord(char):04x}")
    assert text == dumped
    assert json.loads(text) == fields
    assert len(text.splitlines()) == 1, "an NDJSON line that str.splitlines cuts in pieces"


@pytest.mark.parametrize("tail", ["", "é", "🙂"], ids=["ascii", "latin", "astral"])
def test_a_maximal_page_is_held_once_as_it_is_encoded(tail: str) -> None:
    # model_dump_json() gave a str that the response then encoded: two whole copies of a 7 MB page
    # of dead letters, and with one character above U+FFFF in one payload a str of 4 bytes per
    # character, 53 MB at its peak (found by hunting the API's memory creep since e015d3b).
    control = bytes(range(1, 32)) * 2114  # JSON's worst case: \u00XX, six bytes for one
    rows = [
        StoredDeadLetter(f"id{i}", 1_772_323_200_000 + i, "events/bad", "invalid_json", "x", control + tail.encode(), 1)
        for i in range(19)
    ]
    page = DeadLetterPage(items=[DeadLetter.of(row) for row in rows], next_cursor=None)
    # Over 1 MiB, a memoryview of a mapping of its own (api.answer).
    assert json.loads(bytes(json_response(page).body)) == json.loads(page.model_dump_json())
    tracemalloc.start()
    try:
        body = json_response(page).body
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(body) > 6_000_000
    assert peak < 1.3 * len(body), f"a {len(body):,}-byte answer peaked at {peak:,} bytes"
