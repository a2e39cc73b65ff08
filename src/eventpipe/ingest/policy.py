"""Pure policies of the worker: when a batch is due, how long to back off. No I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """A batch is due when it holds max_rows, or its oldest message is max_age_s old."""

    max_rows: int
    max_age_s: float

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_age_s <= 0:
            raise ValueError("a batch needs max_rows >= 1 and max_age_s > 0")

    def wait_s(self, rows: int, oldest_age_s: float) -> float | None:
        """Seconds until the batch is due: 0.0 now, None while empty (wait for a message)."""
        if rows >= self.max_rows:
            return 0.0
        if rows == 0:
            return None
        return max(0.0, self.max_age_s - oldest_age_s)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, capped; `jitter` in [0, 1] spreads retries of many workers."""

    initial_s: float
    max_s: float

    def delay_s(self, attempt: int, jitter: float = 0.0) -> float:
        base: float = min(self.max_s, self.initial_s * 2.0 ** min(attempt, 32))
        return base * (1.0 - 0.5 * jitter)
