"""The `where` grammar and the breakdown metrics, without any I/O: what parses, into what, and what is refused why."""

from __future__ import annotations

import pytest

from eventpipe.events.condition import Condition, ConditionError, Field, parse_condition, parse_field
from eventpipe.events.metric import Metric, parse_metric

COUNTRY = Field("properties", ("country",))
AMOUNT = Field("properties", ("amount",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event_type", Field("event_type")),
        ("user_id", Field("user_id")),
        ("topic", Field("topic")),
        ("properties.country", COUNTRY),
        ("properties.cart.items", Field("properties", ("cart", "items"))),
        ("properties._a-b.C9", Field("properties", ("_a-b", "C9"))),
        ("properties.a.b.c.d.e.f.g.h", Field("properties", tuple("abcdefgh"))),
    ],
)
def test_fields_are_the_columns_or_a_dotted_path_into_properties(text: str, expected: Field) -> None:
    assert parse_field(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("country", "unknown field 'country'"),
        ("country", "a property is properties.country"),
        ("Event_type", "unknown field"),
        ("", "unknown field ''"),
        ("properties", "properties needs a path"),
        ("properties.", "path segment ''"),
        ("properties.a..b", "path segment ''"),
        ("properties.a.", "path segment ''"),
        ("properties.1st", "path segment '1st'"),
        ("properties.-x", "path segment '-x'"),
        ("properties.a b", "path segment 'a b'"),
        ("properties.é", "path segment 'é'"),
        ("properties.a[0]", "path segment 'a[0]'"),
        ("properties.a.b.c.d.e.f.g.h.i", "is 9 deep; at most 8"),
        ("props.country", "unknown field 'props.country'"),
        ("event_type.x", "unknown field 'event_type.x'"),
    ],
)
def test_a_bad_field_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConditionError) as refused:
        parse_field(text)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("text", "operator", "value"),
    [
        ("properties.amount>=100", ">=", "100"),
        ("properties.amount<=100", "<=", "100"),
        ("properties.amount>100", ">", "100"),
        ("properties.amount<100", "<", "100"),
        ("properties.country!=FR", "!=", "FR"),
        ("properties.country=FR", "=", "FR"),
        # The longest operator at the first operator character wins; the rest is the value.
        ("properties.note==x", "=", "=x"),
        ("properties.note=>x", "=", ">x"),
        ("properties.note=a=b", "=", "a=b"),
        ("properties.note!==x", "!=", "=x"),
        ("properties.amount>=-1", ">=", "-1"),
        ("properties.note=", "=", ""),
        ("topic=events/a b", "=", "events/a b"),
    ],
)
def test_the_longest_operator_wins_and_the_rest_is_the_value(text: str, operator: str, value: str) -> None:
    parsed = parse_condition(text)
    assert (parsed.operator, parsed.value) == (operator, value)


@pytest.mark.parametrize(
    ("value", "number", "integer"),
    [
        ("100", 100.0, 100),
        ("-0", 0.0, 0),
        ("100.0", 100.0, 100),
        ("1e2", 100.0, 100),
        ("1E+2", 100.0, 100),
        ("42.5", 42.5, None),
        ("-42.5e-1", -4.25, None),
        ("9007199254740993", 9007199254740992.0, 9007199254740993),  # exact beyond a double's 2^53
        ("18446744073709551615", 2.0**64, 2**64 - 1),  # a UInt64
        ("1e300", 1e300, None),  # whole, but beyond Int128: compared as a double
        ("0e-400", 0.0, 0),  # zero written small is still zero
        ("5e-324", 5e-324, None),  # the smallest double
    ],
)
def test_a_value_written_as_a_json_number_carries_its_number(value: str, number: float, integer: int | None) -> None:
    parsed = parse_condition(f"properties.amount={value}")
    assert (parsed.number, parsed.integer) == (number, integer)


@pytest.mark.parametrize(
    "value", ["FR", "01234", "+5", " 5", "5 ", ".5", "5.", "0x10", "1_000", "NaN", "Infinity", "true", "null", ""]
)
def test_any_other_value_is_a_string_only(value: str) -> None:
    parsed = parse_condition(f"properties.x={value}")
    assert parsed == Condition(Field("properties", ("x",)), "=", value)
    assert parsed.number is None and parsed.integer is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("properties.amount>abc", "> needs a number, got 'abc'"),
        ("properties.amount>=", ">= needs a number, got ''"),
        ("properties.amount<=>1", "<= needs a number, got '>1'"),  # <= won; > is part of the value
        ("properties.amount<true", "< needs a number, got 'true'"),
        ("properties.amount<=01", "<= needs a number, got '01'"),
        ("properties.amount> 5", "encode '+' as %2B"),  # what a bare + in a URL becomes
        ("properties.amount>NaN", "needs a number"),
        ("event_type>5", "> compares numbers, and event_type is text"),
        ("user_id<=5", "user_id is text"),
        ("topic>=a", "topic is text"),
        ("properties.amount=1e999", "the number '1e999' is out of range"),
        ("properties.amount>-1e400", "out of range"),
        ("properties.amount=1e-400", "the number '1e-400' is too small to tell from 0"),
        ("properties.amount>-0.1e-330", "too small to tell from 0"),
        ("properties.country", "has no operator"),
        ("", "has no operator"),
        ("=FR", "has no field before '='"),
        (">=5", "has no field before '>='"),
        ("properties.country!FR", "'!' must be followed by '='"),
        ("country=FR", "unknown field 'country'"),
        ("properties.a..b=1", "path segment ''"),
        ("properties.a.b.c.d.e.f.g.h.i=1", "9 deep"),
        ("properties.a b=1", "path segment 'a b'"),
    ],
)
def test_a_malformed_condition_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConditionError) as refused:
        parse_condition(text)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("exists:user_id", Condition(Field("user_id"), "exists", "")),
        ("missing:user_id", Condition(Field("user_id"), "missing", "")),
        ("missing:properties.cart.items", Condition(Field("properties", ("cart", "items")), "missing", "")),
        ("exists:properties.a", Condition(Field("properties", ("a",)), "exists", "")),
    ],
)
def test_exists_and_missing_test_a_field_with_no_operator_and_no_value(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("exists:event_type", "exists:event_type holds for every event: every event has its event_type"),
        ("missing:topic", "missing:topic holds for no event"),
        ("exists:", "unknown field ''"),
        ("missing:country", "a property is properties.country"),
        ("exists:properties.a=1", "exists:<field> or missing:<field> take a field alone, with no operator"),
        ("missing:user_id!=5", "take a field alone"),
        ("exists:properties", "properties needs a path"),
        ("Exists:user_id", "has no operator: write <field><op><value>, op one of =, !=, >, >=, <, <=, or exists:"),
    ],
)
def test_a_malformed_presence_test_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConditionError) as refused:
        parse_condition(text)
    assert problem in str(refused.value)


def test_an_error_shows_at_most_sixty_characters_of_what_it_refuses() -> None:
    with pytest.raises(ConditionError) as refused:
        parse_condition("properties.amount>" + "x" * 5000)
    assert len(str(refused.value)) < 120
    # An unknown name that could be a property's: the hint that says so echoed all of it.
    for text in ("n" * 900 + "=1", "exists:" + "n" * 900):
        with pytest.raises(ConditionError) as refused:
            parse_condition(text)
        assert str(refused.value).count("n" * 60) == 1 and len(str(refused.value)) < 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count", Metric("count")),
        ("users", Metric("users")),
        ("sum:properties.amount", Metric("sum", AMOUNT)),
        ("avg:properties.amount", Metric("avg", AMOUNT)),
        ("min:properties.cart.total", Metric("min", Field("properties", ("cart", "total")))),
        ("max:properties.amount", Metric("max", AMOUNT)),
    ],
)
def test_metrics_are_counts_or_an_aggregate_of_a_property(text: str, expected: Metric) -> None:
    assert parse_metric(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "unknown metric ''"),
        ("Count", "unknown metric 'Count'"),
        ("sum", "unknown metric 'sum'"),
        ("median:properties.amount", "unknown metric"),
        ("sum:", "unknown field ''"),
        ("sum:amount", "unknown field 'amount'"),
        ("sum:user_id", "sum adds up numbers, and user_id is text"),
        ("avg:event_type", "event_type is text"),
        ("max:properties", "properties needs a path"),
        ("min:properties.a.b.c.d.e.f.g.h.i", "9 deep"),
    ],
)
def test_a_bad_metric_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ConditionError) as refused:
        parse_metric(text)
    assert problem in str(refused.value)
