"""The filter grammar's SQL (store.predicate), read without an engine: what a client writes reaches the query
only as bound parameters, each path is read by one expression, and `!=` is the exact negation of `=`.
What the fragments select is tested on the engine (tests/integration/test_filter.py)."""

from __future__ import annotations

import json
import re

import pytest

from eventpipe.events.condition import parse_condition, parse_field
from eventpipe.store.predicate import Binder, where_sql

HOSTILE = (
    "' OR 1=1 --",
    "x'); DROP TABLE events; --",
    "{where_0:String}",
    "\\' OR \\'a\\'=\\'a",
    "`properties`",
    "caf\u00e9\u0000\n",
    "1e2",
)
# What a fragment may hold besides bound parameters: the engine's functions, the columns, operators, literals.
PLACEHOLDER = re.compile(r"\{(where_\d+):(String|Float64|Int128|UInt32)\}")


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["event_type", "user_id", "topic", "properties.plan", "properties.a.b_c-d"])
@pytest.mark.parametrize("operator", ["=", "!="])
def test_a_clients_value_reaches_the_query_only_as_a_parameter(field: str, operator: str, value: str) -> None:
    parameters: dict[str, object] = {}
    (sql,) = where_sql((parse_condition(f"{field}{operator}{value}"),), parameters)
    # Every placeholder names a parameter that was bound, and no parameter is left unnamed.
    assert {name for name, _kind in PLACEHOLDER.findall(sql)} == set(parameters)
    text = PLACEHOLDER.sub("", sql)
    for part in (value, value.strip("'"), "DROP", "1=1", "--"):
        assert part not in text, (part, sql)
    # As itself for a column, inside the JSON document a property's spelling is read from otherwise.
    assert any(value == bound or json.dumps(value) in str(bound) for bound in parameters.values())


def test_ordering_operators_bind_the_number_twice_never_as_text() -> None:
    parameters: dict[str, object] = {}
    (sql,) = where_sql((parse_condition("properties.amount>=12345678901234567890"),), parameters)
    assert "12345678901234567890" not in PLACEHOLDER.sub("", sql)
    assert sorted(map(str, parameters.values())) == ["1.2345678901234567e+19", "12345678901234567890", "amount"]


def test_one_path_is_one_expression_however_many_conditions_read_it() -> None:
    parameters: dict[str, object] = {}
    conditions = tuple(parse_condition(text) for text in ("properties.n>1", "properties.n<5", "exists:properties.n"))
    fragments = where_sql(conditions, parameters)
    reads = {read for fragment in fragments for read in re.findall(r"JSONExtractRaw\(properties, [^)]*\)", fragment)}
    # The same text, so the engine computes it once; a second path would be a second read.
    assert reads == {"JSONExtractRaw(properties, {where_0:String})"}
    assert [value for value in parameters.values() if value == "n"] == ["n"]


@pytest.mark.parametrize("field", ["user_id", "properties.plan"])
def test_not_equal_is_the_negation_of_equal_so_a_missing_value_is_unequal_to_everything(field: str) -> None:
    equal = where_sql((parse_condition(f"{field}=pro"),), {})[0]
    unequal = where_sql((parse_condition(f"{field}!=pro"),), {})[0]
    if field == "user_id":
        # A NULL user_id would make `user_id != 'pro'` NULL, which WHERE reads as false.
        assert unequal == "(user_id IS NULL OR user_id != {where_0:String})"
    else:
        assert unequal == f"NOT ({equal})"


def test_presence_reads_null_for_a_column_and_an_empty_reading_for_a_property() -> None:
    assert where_sql((parse_condition("missing:user_id"),), {}) == ["isNull(user_id)"]
    assert where_sql((parse_condition("exists:properties.plan"),), {}) == [
        "NOT (JSONExtractRaw(properties, {where_0:String}) = '')"
    ]


def test_a_breakdown_key_is_cut_to_its_length_by_a_parameter() -> None:
    parameters: dict[str, object] = {}
    key = Binder(parameters, "by").key(parse_field("properties.browser"), 64)
    assert key == "substringUTF8(JSONExtract(properties, {by_1:String}, 'Nullable(String)'), 1, {by_0:UInt32})"
    assert parameters == {"by_0": 64, "by_1": "browser"}
