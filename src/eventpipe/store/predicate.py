"""Property filters and breakdown keys as SQL over the events tables.

`properties` is a String column of JSON text, and every path segment is a
bound String parameter (never an index: segments are names). Parsing the
JSON is what a filter or a breakdown costs (one parse of 1.1M rows' 80-byte
properties took about 220 ms of CPU here), so each fragment parses it once:

- A condition reads the property with JSONExtractRaw, which gives the
  value's JSON as ClickHouse writes it again: '' when the path is missing,
  'null', 'true', 'false', a number with its spelling normalised (1e2 and
  100.0 read '100'), or a quoted string. The rest works on that short text.
  A Binder gives one path one expression, which ClickHouse computes once
  however many fragments use it.
- A breakdown key is JSONExtract(..., 'Nullable(String)'): NULL when missing
  or null, a string's text, any other value's JSON text, in one parse.

Numbers compare exactly where they can. `=` compares spellings, which are
exact for whole numbers of up to 64 bits (a condition's whole number under
any spelling, 1e2 or 100.0, by its integer's) and the shortest round trip of a
double otherwise (a longer whole number in a condition is both the text and
the double it spells; a property sent as a double beyond 2^53 reads as the
integer its shortest spelling names, 2^60 as 1152921504606847000, which is how
the ordering operators read it too); the ordering operators compare a whole number within
Int128 as an integer and anything else as a double, and ClickHouse compares
an integer with a double by value, not by rounding it. (The engine reads a
whole number beyond 64 bits as a quoted string: text, then, to both.) These
fragments go in WHERE, which runs after FINAL (store.query), so a condition
only ever sees the copy of an event that FINAL keeps.
"""

from __future__ import annotations

import json

from eventpipe.events.condition import PRESENCE, Condition, Field

# The values a JSON literal spells as text, which JSONExtractRaw gives as they are.
LITERALS = ("true", "false", "null")
# Allow-lists: a column name or an operator reaches SQL only as one of these constants.
COLUMNS = {"event_type": "event_type", "user_id": "user_id", "topic": "topic"}
OPERATORS = {"=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class Binder:
    """SQL fragments for one query; each adds its bound parameters to `parameters`, named from `prefix`."""

    def __init__(self, parameters: dict[str, object], prefix: str) -> None:
        self._parameters = parameters
        self._prefix = prefix
        self._count = 0
        self._raw: dict[tuple[str, ...], str] = {}

    def condition(self, condition: Condition) -> str:
        """A boolean that is never NULL, so that `!=` is exactly NOT `=`."""
        field = condition.field
        if condition.operator in PRESENCE.values():
            # A missing user is a NULL user_id; a missing property (or a path through a value that is no
            # object) reads '' from JSONExtractRaw, where a JSON null reads 'null'.
            absent = f"isNull({COLUMNS[field.name]})" if not field.path else f"({self._property(field.path)} = '')"
            return absent if condition.operator == "missing" else f"NOT {absent}"
        operator = OPERATORS[condition.operator]
        if not field.path:
            column, value = COLUMNS[field.name], self._bind(condition.value, "String")
            if operator == "=":
                return f"{column} = {value}"
            # A NULL user_id is missing, so it is != every value.
            return f"({column} IS NULL OR {column} != {value})"
        raw = self._property(field.path)
        if operator in ("=", "!="):
            equal = self._equal(raw, condition)
            return equal if operator == "=" else f"NOT ({equal})"
        return self._compare(raw, operator, condition)

    def key(self, field: Field, max_chars: int) -> str:
        """A Nullable(String) naming the field's value, cut to `max_chars` characters: NULL when
        it is missing (or JSON null), a string's text, any other JSON value's text."""
        chars = self._bind(max_chars, "UInt32")
        if not field.path:
            return f"substringUTF8(toString({COLUMNS[field.name]}), 1, {chars})"
        segments = self._segments(field.path)
        return f"substringUTF8(JSONExtract(properties, {segments}, 'Nullable(String)'), 1, {chars})"

    def number(self, field: Field) -> str:
        """A Nullable(Float64): the property when it is a JSON number, else NULL."""
        return f"toFloat64OrNull({self._property(field.path)})"

    def _equal(self, raw: str, condition: Condition) -> str:
        """`raw` is one of the value's readings, each spelt as JSONExtractRaw writes it.

        JSONExtractRaw decodes and writes again, so one value has one spelling
        however it was sent ("caf\\u00e9" and "café" both read "café"; 1e2,
        100.0 and 100 read 100), and the value's own readings are spelt by the
        same function on a constant. Equal numbers then have equal spellings
        (the shortest that reads back the same double), but for -0 and 0.
        One IN, not an OR of comparisons: ClickHouse evaluates the later
        operands of OR lazily and computes the property again for them, which
        doubled a filter's cost."""
        spellings = [json.dumps(condition.value)]
        if condition.number is not None:
            # A whole number within 64 bits by its integer spelling: the engine reads 9007199254740993.0
            # as a double, 9007199254740992, which is another property's exact value.
            whole = condition.integer is not None and -(2**63) <= condition.integer < 2**64
            spellings.append(str(condition.integer) if whole else condition.value)
            if _text_to_the_engine(condition.value):
                # Its double then, which is how a property sent as 1e20 reads: "others as doubles".
                spellings.append(json.dumps(condition.number))
            if condition.number == 0:
                spellings += ["0", "-0.0"]
        if condition.value in LITERALS:
            spellings.append(condition.value)
        readings = ", ".join(self._spelt(spelling) for spelling in spellings)
        return f"{raw} IN ({readings})"

    def _compare(self, raw: str, operator: str, condition: Condition) -> str:
        """`raw` as a number against the condition's number; false when `raw` is no number. Whole numbers
        compare as integers; coalesce, unlike if, computes `raw` once for both readings."""
        number = self._bind(condition.number, "Float64")
        exact = number if condition.integer is None else self._bind(condition.integer, "Int128")
        return f"coalesce(toInt128OrNull({raw}) {operator} {exact}, toFloat64OrNull({raw}) {operator} {number}, 0)"

    def _spelt(self, json_text: str) -> str:
        """The JSON value `json_text` as JSONExtractRaw writes it: a constant, computed once per query.
        NULL, never the '' of a missing property, should the engine fail to read it."""
        document = self._bind('{"v":' + json_text + "}", "String")
        return f"nullIf(JSONExtractRaw({document}, 'v'), '')"

    def _property(self, path: tuple[str, ...]) -> str:
        raw = self._raw.get(path)
        if raw is None:
            raw = self._raw[path] = f"JSONExtractRaw(properties, {self._segments(path)})"
        return raw

    def _segments(self, path: tuple[str, ...]) -> str:
        return ", ".join(self._bind(segment, "String") for segment in path)

    def _bind(self, value: object, kind: str) -> str:
        name = f"{self._prefix}_{self._count}"
        self._count += 1
        self._parameters[name] = value
        return f"{{{name}:{kind}}}"


def _text_to_the_engine(number: str) -> bool:
    """Whether the engine reads this JSON number as a quoted string: a whole number beyond 64 bits."""
    return number.lstrip("-").isdigit() and not -(2**63) <= int(number) < 2**64


def where_sql(conditions: tuple[Condition, ...], parameters: dict[str, object]) -> list[str]:
    """The conditions of a `where`, AND-ed by the caller, their parameters added to `parameters`."""
    binder = Binder(parameters, "where")
    return [binder.condition(condition) for condition in conditions]
