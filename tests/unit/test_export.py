"""An export's chunk: each page of events made into the bytes sent, held about once while it is made."""

from __future__ import annotations

import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest

from eventpipe.api.export import ENCODERS, Reading
from eventpipe.events import Event


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
@pytest.mark.parametrize("tail", ["", "🙂"], ids=["ascii", "astral"])
def test_a_page_is_encoded_without_a_copy_of_it_per_step(fmt: str, tail: str) -> None:
    # The page was joined into one str, then encoded: with one character above U+FFFF in one event,
    # that str takes 4 bytes for every character of the page, and the rows' own strs as many again.
    properties = '{"note":"' + "x" * 60_000 + '"}'
    page = [
        Event(f"id{i}", "click", 1_772_323_200_000, 1_772_323_200_000, "u", "events/click", properties)
        for i in range(130)
    ]
    page[-1] = page[-1]._replace(properties='{"note":"' + tail + '"}')
    head, encode = ENCODERS[fmt]
    with ThreadPoolExecutor(1) as pool:
        reading = Reading(pool, iter([page]), threading.Event(), lambda: None, lambda: True)
        tracemalloc.start()
        try:
            chunk = next(reading.chunks(head, encode))
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(chunk) > 7_000_000
    ending = f'"{tail}"}}}}\n' if fmt == "ndjson" else f'""{tail}""}}"\r\n'
    assert chunk.decode().endswith(ending)
    assert peak < 2.5 * len(chunk), f"a {len(chunk):,}-byte chunk peaked at {peak:,} bytes"
