"""The hot path's JSON (events.codec): payloads read as json.loads reads them, but with NaN and Infinity
refused wherever they stand; properties written compactly, as stored and served, with the characters some
readers take for line breaks escaped so that an NDJSON line stays one line."""

from __future__ import annotations

import json
import math

import pytest

from eventpipe.events.codec import dumps, escaped, loads

# Every character str.splitlines breaks a line at; JSON escapes the ASCII ones itself.
LINE_SPLITTERS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def reference(value: object) -> str:
    """What the stored properties must equal: json.dumps with the codec's options."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize(
    ("text", "constant"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        (" NaN ", "NaN"),  # around whitespace, read by the full decoder rather than the scan
        ("[1, NaN]", "NaN"),
        ('{"a":[1,{"b":Infinity}]}', "Infinity"),
        ('{"a":-Infinity} ', "-Infinity"),
        ('{"ok": 1, "bad": NaN}\n', "NaN"),
        ('\n{"a": [Infinity]}', "Infinity"),
    ],
)
def test_the_constants_json_lacks_are_refused_wherever_they_stand(text: str, constant: str) -> None:
    with pytest.raises(ValueError, match=f"^{constant} is not valid JSON$"):
        loads(text)
    json.loads(text)  # which Python's own reader takes: the refusal is the codec's


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"NaN"', "NaN"),  # the names are fine as strings
        ('{"NaN":"Infinity"}', {"NaN": "Infinity"}),
        ("0", 0),
        ("-0", 0),
        ("1.5", 1.5),
        ("true", True),
        ("null", None),
        ("[]", []),
        ("{}", {}),
        (" 1 ", 1),
        ('\n{"a": [1, 2.5, null]}\t', {"a": [1, 2.5, None]}),
        ('{"a":1,"a":2}', {"a": 2}),  # the last of two, as json.loads
        ('"\\ud800"', "\ud800"),  # a lone surrogate escape is read as json.loads reads it
        ('"caf\\u00e9 💩 \u2028"', "café 💩 \u2028"),
        ("1" * 4300, int("1" * 4300)),  # the longest whole number Python converts by default
    ],
)
def test_json_is_read_as_json_loads_reads_it(text: str, value: object) -> None:
    assert loads(text) == value == json.loads(text)
    assert type(loads(text)) is type(value)


@pytest.mark.parametrize(
    "text",
    ["", " ", "nan", "1 2", '{"a":1}x', "01", '"a\nb"', '"unterminated', "{'a': 1}", "[1,]", "\ufeff{}", "-"],
)
def test_what_json_loads_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text)
    with pytest.raises(ValueError):
        json.loads(text)


@pytest.mark.parametrize("text", ["", " ", "1 2", '{"a":1}x', "01", '"a\nb"', "[1,]"])
def test_a_refusal_says_what_json_loads_says(text: str) -> None:
    with pytest.raises(ValueError) as ours:
        loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_a_number_too_long_to_convert_is_a_value_error_the_contract_recognises() -> None:
    # events.contract turns "integer string conversion" into its own advice (send it as a string).
    with pytest.raises(ValueError, match="integer string conversion"):
        loads("1" * 4301)
    with pytest.raises(ValueError, match="integer string conversion"):
        loads('{"n": ' + "9" * 5000 + "}")


@pytest.mark.parametrize("padding", ["", " "])
def test_nesting_too_deep_is_a_recursion_error_the_contract_recognises(padding: str) -> None:
    # events.contract answers RecursionError as too_deep, whichever path read the text.
    with pytest.raises(RecursionError):
        loads(padding + "[" * 100_000 + "]" * 100_000)


def test_an_out_of_range_number_reads_as_infinity_and_cannot_be_written() -> None:
    # 1e999 is JSON; its float is not, so the contract refuses it where it writes the properties.
    assert loads("1e999") == math.inf and loads("-1e999") == -math.inf
    with pytest.raises(ValueError):
        dumps({"n": loads("1e999")})


@pytest.mark.parametrize(
    ("properties", "written"),
    [
        ({}, "{}"),
        ({"a": 1}, '{"a":1}'),
        ({"b": 1, "a": 2}, '{"b":1,"a":2}'),  # the producer's order, not sorted
        ({"a": [1, 2.5, None, True, False], "b": {"c": {}}}, '{"a":[1,2.5,null,true,false],"b":{"c":{}}}'),
        ({"é": "💩"}, '{"é":"💩"}'),  # raw, not \u escapes: stored size is served size
        ({"n": 10**30, "f": 1e16, "g": 1e-7}, '{"n":1000000000000000000000000000000,"f":1e+16,"g":1e-07}'),
        ({"a": "\x00\x1f\x7f"}, '{"a":"\\u0000\\u001f\x7f"}'),
        ({"a": 'quote " and \\ backslash'}, '{"a":"quote \\" and \\\\ backslash"}'),
        ({"a": "\\u2028"}, '{"a":"\\\\u2028"}'),  # the six characters, not the line separator
        ({"k": "\u2028\u2029\x85"}, '{"k":"\\u2028\\u2029\\u0085"}'),
        ({"\u2028": 1}, '{"\\u2028":1}'),
        ({1: "x"}, '{"1":"x"}'),
    ],
)
def test_properties_are_written_compactly_as_json_dumps_writes_them(
    properties: dict[str, object], written: str
) -> None:
    assert dumps(properties) == written == escaped(reference(properties))


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_json_cannot_hold_is_not_written(number: float) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"a": number})
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"a": [1, {"b": number}]})


@pytest.mark.parametrize("char", LINE_SPLITTERS)
def test_written_properties_are_one_line_for_every_reader_and_read_back_the_same(char: str) -> None:
    properties = {f"key{char}": f"before{char}after", "list": [char]}
    written = dumps(properties)
    assert written.splitlines() == [written]
    assert loads(written) == properties == json.loads(written)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("plain", "plain"),
        ("café 💩", "café 💩"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
        ("\x85", "\\u0085"),
        ("a\u2028b\u2029c\x85d\u2028", "a\\u2028b\\u2029c\\u0085d\\u2028"),
        ("\n", "\n"),  # JSON escapes it itself; escaped() leaves it alone
        ("\\u2028", "\\u2028"),  # already an escape
    ],
)
def test_escaped_replaces_only_the_three_line_breaks_json_leaves_raw(text: str, expected: str) -> None:
    assert escaped(text) == expected


@pytest.mark.parametrize("value", ["\u2028", "x\x85y", {"a\u2029": ["\u2028", "\x85"]}, "\u2028" * 10_000])
def test_escaped_json_is_the_same_json_value(value: object) -> None:
    text = escaped(reference(value))
    assert json.loads(text) == value
    assert not set(text) & set("\x85\u2028\u2029")
