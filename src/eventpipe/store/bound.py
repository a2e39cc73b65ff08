"""What the API's reads may spend in ClickHouse, time and memory, and which failures are the client's read.

A read with `since` and `until` far apart, a filter that selects few events, or a
breakdown by a field of many values costs what the client chose to ask for. The
time bound (EVENTPIPE_API_QUERY_TIMEOUT_S) stops it at a time, but not what it holds
meanwhile: a breakdown of distinct users by a property a producer made unique to
each of 10M events held 693 MiB for 6 s on the embedded engine, which shares its
process with the worker and stops only at 90% of the machine's memory. Past either
bound ClickHouse stops the query, and the client gets CostlyQueryError (422
too_costly): retrying it as it is would fail the same way. The memory bound holds
for every other read too (the export's and the feed's windows, the tally's counts,
the lookup by id): a filter on properties through FINAL holds a block of each part
it meets, and an export of 60 KB events over 32 unmerged parts held 1,089 MiB. Those
have no window the client can narrow, so past it they fail as ClickHouse's own
limits do, retryable (503): merges that catch up make the same read cheaper.
"""

from __future__ import annotations

import re
from time import monotonic

from eventpipe.errors import CostlyQueryError, HeavyReadError, StorageError

# ClickHouse's TIMEOUT_EXCEEDED: max_execution_time passed.
TIMEOUT_EXCEEDED = 159
# ClickHouse's MEMORY_LIMIT_EXCEEDED, for any of its limits: the query's, a user's, the server's.
MEMORY_LIMIT_EXCEEDED = 241
# The query's own limit (max_memory_usage, which Bound sets), as 26.x and as earlier versions word it.
QUERY_MEMORY = re.compile(r"Query memory limit exceeded|Memory limit \(for query\) exceeded")
# The API user's limit (max_memory_usage_for_user, its profile's in compose): the API's reads at once hold it
# all, and any of them fails, however small. The server's own ("(total)") is its state: 503 unavailable.
USER_MEMORY = re.compile(r"User memory limit exceeded|Memory limit \(for user\) exceeded")
# Less than this left of a read's bound is none: not worth a query that would be cut at once.
MIN_LEFT_S = 0.01
MIB = 1024 * 1024


class Bound:
    """The settings of the API's queries (`always` for every one, `settings()` for a read a client can narrow),
    and whether a failure was a query passing them."""

    def __init__(self, timeout_s: float | None, memory_bytes: int | None = None) -> None:
        """`timeout_s`: ClickHouse's max_execution_time; `memory_bytes`: its max_memory_usage. None: no bound."""
        self.timeout_s = timeout_s or None
        self.memory_bytes = memory_bytes or None
        # Every query's: the memory bound alone.
        self.always: dict[str, float | int] = {"max_memory_usage": self.memory_bytes} if self.memory_bytes else {}
        self._settings: dict[str, float | int] = dict(self.always)
        if self.timeout_s:
            self._settings["max_execution_time"] = self.timeout_s

    def deadline(self) -> float | None:
        """When (time.monotonic()) a read of several queries that starts now must be done, None for never."""
        return monotonic() + self.timeout_s if self.timeout_s else None

    def settings(self, ends: float | None = None) -> dict[str, float | int]:
        """One bounded query's settings: both bounds, its time cut to what is left before `ends`."""
        if self.timeout_s is None or ends is None:
            return self._settings
        left = round(ends - monotonic(), 3)
        if left < MIN_LEFT_S:  # 0 would be no bound at all to ClickHouse
            raise CostlyQueryError(self._past_time())
        return {**self._settings, "max_execution_time": min(left, self.timeout_s)}

    def passed(self, exc: StorageError, narrowable: bool) -> StorageError | None:
        """The error for the client when `exc` is a query stopped at one of these bounds, else None: a read
        it can narrow (`narrowable`) gets CostlyQueryError, any other past the memory bound HeavyReadError, as
        does any read past the API user's memory limit. A timeout on a read that is not narrowable is the
        server's own limit (no time bound is set on it)."""
        cause = exc.__cause__
        code = getattr(cause, "code", None)
        if code == TIMEOUT_EXCEEDED and narrowable:
            return CostlyQueryError(self._past_time())
        if code != MEMORY_LIMIT_EXCEEDED:
            return None
        if USER_MEMORY.search(str(cause)):
            return HeavyReadError("the API's reads at once hold all the memory ClickHouse gives them: retry later")
        if not self.memory_bytes or not QUERY_MEMORY.search(str(cause)):
            return None
        bound = f"{self.memory_bytes / MIB:g} MiB"
        if not narrowable:
            return HeavyReadError(
                f"this read needed more than the {bound} of memory a read may hold, while the store has parts "
                "still to merge: retry later"
            )
        return CostlyQueryError(
            f"this read needed more than its {bound} memory bound: narrow it with since and until, and filter "
            "with event_type rather than properties; break a breakdown down by a field of fewer values. "
            "Or retry once the store has merged its newest parts"
        )

    def _past_time(self) -> str:
        bound = f"its {self.timeout_s:g} s" if self.timeout_s else "the server's time"
        return f"this read ran past {bound} bound: narrow it with since and until, or an event_type"
