"""to_epoch_ms reads the common RFC 3339 form at once; the instant is the one the general reading gives."""

from __future__ import annotations

import pytest

from eventpipe.events.timestamp import to_epoch_ms

FORMS = [
    "2026-12-06T23:57:35.284Z",
    "2026-12-06T23:57:35.2849999Z",  # finer than a microsecond: down to the millisecond before
    "2026-12-06T23:57:35.284+02:00",
    "2026-12-06T23:57:35.284-09:30",
    "2026-12-06 23:57:35Z",
    "2026-12-06t23:57:35Z",
    "2026-12-06T23:57:35z",
    "2026-12-06T23:57:35",  # no offset: UTC
    "2026-12-06",
    "2016-12-31T23:59:60Z",  # a leap second
    "1969-12-31T23:59:59.9995Z",  # before the epoch: floors too
    "2026-12-06T23:57:35Z\x00junk",
    "2026-13-06T23:57:35Z",
    "2026-12-06T23:57:35.284Zjunk",
]


@pytest.mark.parametrize("text", FORMS)
def test_the_quick_reading_gives_the_instant_or_the_refusal_of_the_general_one(text: str) -> None:
    # A leading space skips the quick reading; the general one strips it and reads the same text.
    try:
        expected: int | str = to_epoch_ms(" " + text)
    except ValueError as exc:
        expected = str(exc).replace(repr(" " + text), repr(text))
    try:
        got: int | str = to_epoch_ms(text)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


def test_known_instants() -> None:
    assert to_epoch_ms("2026-12-06T23:57:35.284Z") == 1_796_601_455_284
    assert to_epoch_ms("2026-12-07T01:57:35.284+02:00") == 1_796_601_455_284
    assert to_epoch_ms("1969-12-31T23:59:59.9995Z") == -1
