"""Property filters: the `where=<field><op><value>` grammar, parsed into values the store binds.

Pure policy, no I/O: the store (store.predicate) turns a Condition into SQL
with every part a bound parameter, and the API turns a ConditionError into a
422 that carries its message. What a condition means:

- `=` compares numbers as numbers, strings as strings and booleans as
  `true`/`false`. A query string cannot say which of these a value is, so a
  value matches each reading it has: `100` matches the number 100 (also
  written 100.0 or 1e2) and the string "100"; `true` the boolean and the
  string "true"; `null` a JSON null and the string "null". Objects and
  arrays equal nothing.
- `!=` is exactly "not `=`": a missing property never equals anything and
  so is always `!=`, a null user_id likewise.
- `>`, `>=`, `<`, `<=` compare numbers only, so they need a number for a
  value, and only a property holding a JSON number can pass them.
- `exists:<field>` and `missing:<field>` test presence, with no operator and
  no value: the only way to select the events without a user, or without a
  property, since `user_id=null` is the user named "null". A property holding
  JSON null is present (`=null` selects it). `event_type` and `topic` are on
  every event, so testing them is refused as a mistake.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import NamedTuple, NoReturn

# The event's own columns a condition may name; all are text.
COLUMNS = ("event_type", "user_id", "topic")
PROPERTIES = "properties"
SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_DEPTH = 8
# Longest first: at one position, `>=` wins over `>`.
OPERATORS = (">=", "<=", "!=", "=", ">", "<")
ORDERING = frozenset({">", ">=", "<", "<="})
OPERATOR_CHARS = frozenset("=!<>")
# A value is a number when it is written as JSON writes one.
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# An integer within this bound is compared exactly (ClickHouse Int128), not as a double.
INTEGER_BOUND = 2**127
FIELD_HELP = "event_type, user_id, topic or properties.<path>"
# Characters of what a client sent that an error echoes at most.
SHOWN = 60
# Presence tests, by their prefix: the operator a Condition carries for each (with an empty value).
PRESENCE = {"exists:": "exists", "missing:": "missing"}
PRESENCE_HELP = "exists:<field> or missing:<field>"
OPERATOR_HELP = "=, !=, >, >=, <, <="


class ConditionError(ValueError):
    """A malformed field, condition or metric; the message names the problem."""


class Field(NamedTuple):
    """One of COLUMNS (path empty), or `properties` and a path into it."""

    name: str
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join((self.name, *self.path))


class Condition(NamedTuple):
    field: Field
    operator: str
    value: str
    number: float | None = None  # the value as a JSON number, when it is written as one
    integer: int | None = None  # and exactly, when that number is a whole one within INTEGER_BOUND


def parse_field(text: str) -> Field:
    """`event_type`, `user_id`, `topic` or `properties.<path>`, or a ConditionError saying what is wrong."""
    if text in COLUMNS:
        return Field(text)
    if text == PROPERTIES:
        return _refuse("properties needs a path into it, e.g. properties.country")
    head, dot, rest = text.partition(".")
    if head != PROPERTIES or not dot:
        # Cut as every echo is: the whole of a 900-character name came back in the hint.
        hint = f"; a property is properties.{text}" if SEGMENT.fullmatch(text) and len(text) <= SHOWN else ""
        return _refuse(f"unknown field {_shown(text)}: use {FIELD_HELP}{hint}")
    segments = tuple(rest.split("."))
    if len(segments) > MAX_DEPTH:
        return _refuse(f"path {_shown(text)} is {len(segments)} deep; at most {MAX_DEPTH}")
    for segment in segments:
        if not SEGMENT.fullmatch(segment):
            return _refuse(f"path segment {_shown(segment)} of {_shown(text)} is not a name ([A-Za-z_][A-Za-z0-9_-]*)")
    return Field(PROPERTIES, segments)


def parse_condition(text: str) -> Condition:
    """One `<field><op><value>`, `exists:<field>` or `missing:<field>`, or a ConditionError naming the problem."""
    for prefix, test in PRESENCE.items():
        if text.startswith(prefix):
            named = text.removeprefix(prefix)
            if any(char in OPERATOR_CHARS for char in named):
                return _refuse(f"{_shown(text)}: {PRESENCE_HELP} take a field alone, with no operator or value")
            return _presence(parse_field(named), test)
    at = next((index for index, char in enumerate(text) if char in OPERATOR_CHARS), None)
    if at is None:
        return _refuse(
            f"{_shown(text)} has no operator: write <field><op><value>, op one of {OPERATOR_HELP}, or {PRESENCE_HELP}"
        )
    operator = next((op for op in OPERATORS if text.startswith(op, at)), None)
    if operator is None:
        return _refuse(f"{_shown(text)}: '!' must be followed by '=' (operators: {OPERATOR_HELP})")
    if at == 0:
        return _refuse(f"{_shown(text)} has no field before {operator!r}: use {FIELD_HELP}")
    field = parse_field(text[:at])
    value = text[at + len(operator) :]
    number, integer = _number(value)
    if operator in ORDERING:
        if field.name != PROPERTIES:
            return _refuse(f"{operator} compares numbers, and {field.name} is text: use = or !=")
        if number is None:
            hint = "; encode '+' as %2B in a URL" if value[:1] == " " else ""
            return _refuse(f"{operator} needs a number, got {_shown(value)}{hint}")
    return Condition(field, operator, value, number, integer)


def _presence(field: Field, test: str) -> Condition:
    if field.name in ("event_type", "topic"):
        # Every event has both: the filter would keep all or nothing, which is not what was meant.
        every = "every event" if test == "exists" else "no event"
        return _refuse(f"{test}:{field.name} holds for {every}: every event has its {field.name}")
    return Condition(field, test, "")


def _number(value: str) -> tuple[float | None, int | None]:
    if not NUMBER.fullmatch(value):
        return None, None
    number = float(value)
    if not math.isfinite(number):
        return _refuse(f"the number {_shown(value)} is out of range")
    try:
        exact = Decimal(value)
    except InvalidOperation:  # pragma: no cover - NUMBER admits only what Decimal reads
        return number, None
    if number == 0 and exact != 0:
        # A double reads it as 0, so it would silently filter on zero (and > on "above zero").
        return _refuse(f"the number {_shown(value)} is too small to tell from 0 (a double reads it as 0)")
    whole = abs(exact) < INTEGER_BOUND and exact == exact.to_integral_value()
    return number, int(exact) if whole else None


def _shown(text: str) -> str:
    # Enough to recognise a value in an error, never all of a long one.
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "…")


def _refuse(message: str) -> NoReturn:
    raise ConditionError(message)
