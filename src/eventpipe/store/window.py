"""Time cut into windows of about a number of stored rows, estimated from the parts alone.

A read that walks a table in time order (the export, the feed's candidates)
bounds each query by a window, so a query reads about that many rows whatever
its filter keeps and whatever its LIMIT waits for, and the primary key skips
every part and granule outside it. Estimated from each part's time range and
row count (system.parts, no row read), as if its rows were spread evenly
over its range: years without data are crossed in one window.
"""

from __future__ import annotations

# A part as Windows takes it: (first ms, last ms + 1, rows).
Span = tuple[int, int, int]


def in_ms(first_s: int, last_s: int, rows: int) -> Span:
    """A part as Windows takes it, from system.parts' time range in whole seconds: its last second
    holds rows up to its end, so the span ends a second after it."""
    return first_s * 1000, (last_s + 1) * 1000, rows


class Windows:
    """Time cut into windows of about `rows` stored rows, estimated from the parts,
    as if each part's rows were spread evenly over its time range."""

    def __init__(self, parts: list[Span], rows: int) -> None:
        # The parts holding rows.
        self._parts = [(low, high, count) for low, high, count in parts if count]
        self._rows = rows

    @property
    def oldest(self) -> int | None:
        return min((low for low, _high, _count in self._parts), default=None)

    def end(self, start: int) -> int | None:
        """Where the window from `start` ends; None when the rest of time is one window."""
        ahead = [part for part in self._parts if part[1] > start]
        newest = max((high for _low, high, _count in ahead), default=start)
        if _held(ahead, start, newest) <= self._rows:
            return None
        low, high = start + 1, newest  # held(low) may be within rows; held(high) is not
        while low < high:
            middle = (low + high) // 2
            if _held(ahead, start, middle) > self._rows:
                high = middle
            else:
                low = middle + 1
        return low


def _held(parts: list[Span], start: int, end: int) -> float:
    """The rows of `parts` estimated to lie in [start, end)."""
    return sum(count * max(0, min(end, high) - max(start, low)) / (high - low) for low, high, count in parts)
