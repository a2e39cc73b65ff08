"""What a breakdown measures: `count`, `users`, or `sum:`, `avg:`, `min:`, `max:` of a numeric property.

Pure policy, like events.condition: store.breakdown turns a Metric into SQL.
"""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.events.condition import PROPERTIES, ConditionError, Field, parse_field

COUNTS = ("count", "users")
AGGREGATES = ("sum", "avg", "min", "max")
METRIC_HELP = "count, users, or sum:, avg:, min: or max: followed by properties.<path>"


class Metric(NamedTuple):
    """`count` (events), `users` (distinct non-null user_id), or an aggregate of a property's numbers."""

    kind: str
    field: Field | None = None

    def __str__(self) -> str:
        return self.kind if self.field is None else f"{self.kind}:{self.field}"


def parse_metric(text: str) -> Metric:
    """A Metric, or a ConditionError naming the problem."""
    if text in COUNTS:
        return Metric(text)
    kind, colon, rest = text.partition(":")
    if kind not in AGGREGATES or not colon:
        shown = text if len(text) <= 60 else text[:60] + "…"
        raise ConditionError(f"unknown metric {shown!r}: use {METRIC_HELP}")
    field = parse_field(rest)
    if field.name != PROPERTIES:
        raise ConditionError(f"{kind} adds up numbers, and {field.name} is text: use {kind}:properties.<path>")
    return Metric(kind, field)
