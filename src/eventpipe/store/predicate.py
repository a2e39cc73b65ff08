"""Property filters and breakdown keys as SQL over the events tables.

`properties` is a String column of JSON text. A property is read with
JSONExtractRaw, each path segment a bound String parameter (never an
index: segments are names), which gives the value's JSON as ClickHouse
writes it again: '' when the path is missing, 'null', 'true', 'false', a
number with its spelling normalised (1e2 and 100.0 read '100'), or a quoted
string. Everything else works on that short text, so each row's JSON is
parsed once per path however many fragments name it: a Binder gives one
path one expression, and ClickHouse computes identical expressions once.

Numbers compare exactly where they can: a whole number within Int128 as an
integer (Int64 and UInt64 properties both fit), anything else as a double,
and ClickHouse compares an integer with a double by value, not by rounding
it. These fragments go in WHERE, which runs after FINAL (store.query), so a
condition only ever sees the copy of an event that FINAL keeps.
"""

from __future__ import annotations

from eventpipe.events.condition import Condition, Field

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
        field, operator = condition.field, OPERATORS[condition.operator]
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
        raw = self._property(field.path)
        return (
            f"multiIf({raw} IN ('', 'null'), NULL, startsWith({raw}, '\"'),"
            f" substringUTF8(JSONExtractString({raw}), 1, {chars}), substringUTF8({raw}, 1, {chars}))"
        )

    def number(self, field: Field) -> str:
        """A Nullable(Float64): the property when it is a JSON number, else NULL."""
        return f"toFloat64OrNull({self._property(field.path)})"

    def _equal(self, raw: str, condition: Condition) -> str:
        text = self._bind(condition.value, "String")
        readings = [f"(startsWith({raw}, '\"') AND JSONExtractString({raw}) = {text})"]
        if condition.number is not None:
            readings.append(self._compare(raw, "=", condition))
        if condition.value in LITERALS:
            readings.append(f"{raw} = {text}")
        return "(" + " OR ".join(readings) + ")"  # whole: the caller ANDs it with other conditions

    def _compare(self, raw: str, operator: str, condition: Condition) -> str:
        """`raw` as a number against the condition's number; false when `raw` is no number."""
        number = self._bind(condition.number, "Float64")
        exact = number if condition.integer is None else self._bind(condition.integer, "Int128")
        whole = f"toInt128OrNull({raw})"
        compared = f"if(isNotNull({whole}), {whole} {operator} {exact}, toFloat64OrNull({raw}) {operator} {number})"
        return f"ifNull({compared}, 0)"

    def _property(self, path: tuple[str, ...]) -> str:
        raw = self._raw.get(path)
        if raw is None:
            segments = ", ".join(self._bind(segment, "String") for segment in path)
            raw = self._raw[path] = f"JSONExtractRaw(properties, {segments})"
        return raw

    def _bind(self, value: object, kind: str) -> str:
        name = f"{self._prefix}_{self._count}"
        self._count += 1
        self._parameters[name] = value
        return f"{{{name}:{kind}}}"


def where_sql(conditions: tuple[Condition, ...], parameters: dict[str, object]) -> list[str]:
    """The conditions of a `where`, AND-ed by the caller, their parameters added to `parameters`."""
    binder = Binder(parameters, "where")
    return [binder.condition(condition) for condition in conditions]
