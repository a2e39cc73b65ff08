"""Pure policies of the worker: when a batch is due, what it takes, how long to back off. No I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def leading(sizes: Iterable[int], max_rows: int, max_bytes: int) -> tuple[int, int]:
    """How many of the first messages, of these payload sizes in order, fit in max_rows and max_bytes together,
    and their bytes."""
    rows = total = 0
    for size in sizes:
        if rows == max_rows or total + size > max_bytes:
            break
        rows += 1
        total += size
    return rows, total


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """A batch is due when it holds max_rows, or max_bytes of payloads, or its oldest message is max_age_s old."""

    max_rows: int
    max_age_s: float
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_age_s <= 0 or self.max_bytes < 1:
            raise ValueError("a batch needs max_rows >= 1, max_age_s > 0 and max_bytes >= 1")

    def wait_s(self, rows: int, size: int, oldest_age_s: float) -> float | None:
        """Seconds until a batch of `rows` messages and `size` payload bytes is due: 0.0 now, None while empty
        (wait for a message)."""
        if rows >= self.max_rows or size >= self.max_bytes:
            return 0.0
        if rows == 0:
            return None
        return max(0.0, self.max_age_s - oldest_age_s)

    def take(self, size: int, sizes: Iterable[int]) -> int:
        """How many of the held messages (`size` bytes together, each's in `sizes`, read only when needed) the
        next batch takes: max_rows, or fewer when their bytes would pass max_bytes, but never none. Cut there, a
        batch being written leaves the rest of the held-bytes budget to the next one filling."""
        if size <= self.max_bytes:
            return self.max_rows
        return max(1, leading(sizes, self.max_rows, self.max_bytes)[0])


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, capped; `jitter` in [0, 1] spreads retries of many workers."""

    initial_s: float
    max_s: float

    def delay_s(self, attempt: int, jitter: float = 0.0) -> float:
        base: float = min(self.max_s, self.initial_s * 2.0 ** min(attempt, 32))
        return base * (1.0 - 0.5 * jitter)
