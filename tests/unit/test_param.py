"""The data routes' query parameters beyond their types (api.param): an empty filter is no filter, a time
bound is read as the store holds it or refused with a 422 naming it, integers are decimal digits only,
a dead-letter reason is one of the known ones, and a query string or body that would be misread is told."""

from __future__ import annotations

import typing

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from eventpipe.api.error import ApiError
from eventpipe.api.param import (
    LATEST_MS,
    LetterReason,
    LetterStatus,
    Limit,
    _decimal,
    _encoding_problem,
    _is_list,
    _known_reason,
    _repeated_fields,
    instant,
    text,
    window,
    within,
)
from eventpipe.events import Reason

NOV_22_0930_MS = 1_795_339_800_000  # 2026-11-22T09:30:00Z


def refusal(call: typing.Callable[[], object]) -> str:
    """The detail of the 422 `call` answers."""
    with pytest.raises(ApiError) as refused:
        call()
    assert (refused.value.status, refused.value.error) == (422, "invalid_parameter")
    return refused.value.detail


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("click", "click"), (" ", " ")])
def test_an_empty_filter_is_no_filter(value: str | None, expected: str | None) -> None:
    assert text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("2026-11-22T09:30:00Z", NOV_22_0930_MS),
        ("2026-11-22t09:30:00z", NOV_22_0930_MS),
        ("2026-11-22 09:30:00Z", NOV_22_0930_MS),
        ("2026-11-22T09:30:00", NOV_22_0930_MS),  # no offset: UTC
        (" 2026-11-22T10:30:00+01:00 ", NOV_22_0930_MS),
        ("Sun, 22 Nov 2026 09:30:00 GMT", NOV_22_0930_MS),
        ("1795339800", NOV_22_0930_MS),  # seconds below 10^11
        ("1795339800000", NOV_22_0930_MS),  # milliseconds from 10^11
        ("20261122", NOV_22_0930_MS - 34_200_000),  # a basic date, not seconds in 1970
        # A bound between two milliseconds goes to the later: events are whole milliseconds.
        ("2026-11-22T09:30:00.0001Z", NOV_22_0930_MS + 1),
        ("1795339800.0005", NOV_22_0930_MS + 1),
        ("1795339800.001", NOV_22_0930_MS + 1),
        # The store's range, 1970 to 10^13 ms, at both ends.
        ("0", 0),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.9999Z", 0),
        ("100000000000", 10**11),
        ("9999999999999", LATEST_MS - 1),
        ("2286-11-20T17:46:39.999Z", LATEST_MS - 1),
    ],
)
def test_a_time_bound_is_read_as_epoch_milliseconds(value: str | None, expected: int | None) -> None:
    assert instant("since", value) == expected


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("garbage", "since: timestamp 'garbage' is in no accepted form: RFC 3339"),
        ("   ", "since: timestamp '' is in no accepted form"),  # blank is not empty: told, not ignored
        ("\ud800", "since: timestamp '\\ud800' is in no accepted form"),
        ("١٧٩٥٣٣٩٨٠٠", "since: timestamp '١٧٩٥٣٣٩٨٠٠' is in no accepted form"),  # digits, but not ASCII ones
        ("1e9", "since: timestamp '1e9' is in no accepted form"),
        ("2026-11-22T09:30:00Z\x00junk", "since: timestamp '2026-11-22T09:30:00Z\\x00junk' holds a NUL character"),
        ("2026-02-30T00:00:00Z", "since: timestamp '2026-02-30T00:00:00Z' is in no accepted form"),
        ("Sun, 22 Nov 2026 09:30:00 CST", "since: timestamp 'Sun, 22 Nov 2026 09:30:00 CST' is in no accepted form"),
        ("Mon, 22 Nov 2026 09:30:00 GMT", "since: timestamp 'Mon, 22 Nov 2026 09:30:00 GMT': 22 Nov 2026 is a Sun"),
        ("x" * 65, "since: timestamp string is too long"),
        ("-1", "since: '-1' is outside 1970 to 2286"),
        ("1969-12-31T23:59:59.999Z", "since: '1969-12-31T23:59:59.999Z' is outside 1970 to 2286"),
        ("99999999999", "since: '99999999999' is outside 1970 to 2286"),  # seconds: the year 5138
        ("10000000000000", "since: '10000000000000' is outside 1970 to 2286"),
        ("2286-11-20T17:46:40Z", "since: '2286-11-20T17:46:40Z' is outside 1970 to 2286"),
        ("9999-12-31T23:59:60Z", "since: timestamp '9999-12-31T23:59:60Z' is past the year 9999"),
    ],
)
def test_a_time_bound_that_cannot_be_read_or_stored_is_a_422_naming_it(value: str, detail: str) -> None:
    said = refusal(lambda: instant("since", value))
    assert said.startswith(detail), said
    assert not said.endswith("in a URL") or " " in value.strip()


@pytest.mark.parametrize(
    ("value", "hinted"),
    [
        ("2026-11-22T10:30:00 01:00", True),  # '+01:00' sent unencoded reaches the server as ' 01:00'
        ("2026-11-22 10:30:00 01:00", True),  # the space before the time stays a space
        ("1795339800 5", False),  # a space, but no '+' there makes it a time
        ("Sun, 22 Nov 2026 09:30:00 CST", False),  # the zone is what is wrong
        ("garbage ", False),  # only inside the value: spaces around it are not a '+'
        (" garbage", False),
        ("garbage", False),
    ],
)
def test_a_space_where_a_plus_makes_a_time_is_hinted_to_be_an_unencoded_plus(value: str, hinted: bool) -> None:
    said = refusal(lambda: instant("until", value))
    assert said.startswith("until: ")
    assert said.endswith("; encode '+' as %2B in a URL") is hinted


@pytest.mark.parametrize("value", ["y" * 64, "é" * 64, "2026-11-22T09:30:00Z" + "!" * 44])
def test_a_refused_bound_is_echoed_cut_to_sixty_characters(value: str) -> None:
    said = refusal(lambda: instant("since", value))
    assert repr(value[:60] + "…") in said
    assert value not in said


@pytest.mark.parametrize("epoch_ms", [0, 1, LATEST_MS - 1])
def test_within_passes_the_stores_range_through(epoch_ms: int) -> None:
    assert within("since", "as sent", epoch_ms) == epoch_ms


@pytest.mark.parametrize("epoch_ms", [-1, -(10**20), LATEST_MS, 10**20])
def test_within_refuses_what_the_store_cannot_hold_quoting_the_value_as_sent(epoch_ms: int) -> None:
    assert refusal(lambda: within("until", "as sent", epoch_ms)) == "until: 'as sent' is outside 1970 to 2286"
    long = "9" * 100
    assert refusal(lambda: within("since", long, epoch_ms)) == f"since: {'9' * 60 + '…'!r} is outside 1970 to 2286"


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, (None, None)),
        ("", "", (None, None)),
        ("2026-11-22T09:30:00Z", None, (NOV_22_0930_MS, None)),
        (None, "2026-11-22T09:30:00Z", (None, NOV_22_0930_MS)),
        ("2026-11-22T09:30:00Z", "2026-11-22T09:30:00.001Z", (NOV_22_0930_MS, NOV_22_0930_MS + 1)),
        ("0", "9999999999999", (0, LATEST_MS - 1)),
    ],
)
def test_a_window_is_its_two_bounds(
    since: str | None, until: str | None, expected: tuple[int | None, int | None]
) -> None:
    assert window(since, until) == expected


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-11-22T09:30:00Z", "2026-11-22T09:30:00Z"),
        ("2026-11-22T09:30:00Z", "1795339800"),  # the same instant spelt two ways
        ("2026-11-22T10:30:00+01:00", "Sun, 22 Nov 2026 09:30:00 GMT"),
        ("2026-11-22T09:30:00.001Z", "2026-11-22T09:30:00Z"),
        ("9999999999999", "0"),
    ],
)
def test_a_window_that_ends_at_or_before_its_start_is_refused(since: str, until: str) -> None:
    assert refusal(lambda: window(since, until)) == "since must be before until"


@pytest.mark.parametrize(
    ("since", "until", "named"),
    [
        ("garbage", "also garbage", "since: "),  # the first problem, since's
        ("garbage", "2026-11-22T09:30:00Z", "since: "),
        ("2026-11-22T09:30:00Z", "garbage", "until: "),
        ("-1", "garbage", "since: "),
        (None, "99999999999", "until: "),
    ],
)
def test_a_window_with_a_bad_bound_names_it(since: str | None, until: str | None, named: str) -> None:
    assert refusal(lambda: window(since, until)).startswith(named)


@pytest.mark.parametrize("value", ["0", "1", "10", "007", "9" * 50, 5, None])
def test_an_integer_in_decimal_digits_passes_to_the_types_check(value: object) -> None:
    assert _decimal(value) == value


@pytest.mark.parametrize(
    "value", ["", "1_0", "1.0", "1.5", " 1", "1 ", "+1", "-1", "1e3", "0x10", "١٢", "²", "\uff11", "1\x00"]
)
def test_an_integer_spelt_any_other_way_is_refused(value: str) -> None:
    with pytest.raises(PydanticCustomError) as refused:
        _decimal(value)
    assert refused.value.type == "whole_number"
    assert str(refused.value) == "Input should be a whole number, in decimal digits only"


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("10", 10), ("1000", 1000), ("0010", 10)])
def test_a_limit_is_read_from_its_digits(value: str, expected: int) -> None:
    assert TypeAdapter(Limit).validate_python(value) == expected


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("0", "greater_than_equal"),
        ("1001", "less_than_equal"),
        ("1.0", "whole_number"),  # refused like 1.5: before, pydantic's lax int took it
        ("1_000", "whole_number"),
        ("", "whole_number"),
    ],
)
def test_a_limit_out_of_bounds_or_not_in_digits_is_refused(value: str, kind: str) -> None:
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(Limit).validate_python(value)
    assert [error["type"] for error in refused.value.errors()] == [kind]


@pytest.mark.parametrize("value", [*(reason.value for reason in Reason), None, ""])
def test_a_known_reason_or_none_passes(value: str | None) -> None:
    assert _known_reason(value) == value
    assert TypeAdapter(LetterReason).validate_python(value) == value


@pytest.mark.parametrize(
    "value", ["INVALID_JSON", "invalid-json", " invalid_json", "invalid_json ", "x", "oversize\x00"]
)
def test_a_misspelt_reason_is_refused_listing_every_reason(value: str) -> None:
    with pytest.raises(PydanticCustomError) as refused:
        _known_reason(value)
    assert refused.value.type == "reason"
    assert str(refused.value) == "not a dead-letter reason; one of " + ", ".join(reason.value for reason in Reason)
    # As the route answers it: without pydantic's "Value error, " before it.
    with pytest.raises(ValidationError) as validated:
        TypeAdapter(LetterReason).validate_python(value)
    assert validated.value.errors()[0]["msg"].startswith("not a dead-letter reason; one of oversize, invalid_utf8")


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), (None, None), ("pending", "pending"), ("failed", "failed")]
)
def test_a_replay_status_is_one_of_three_or_none(value: str | None, expected: str | None) -> None:
    assert TypeAdapter(LetterStatus).validate_python(value) == expected


@pytest.mark.parametrize("value", ["PENDING", "done", " pending"])
def test_an_unknown_replay_status_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(LetterStatus).validate_python(value)


LONE_PERCENT = "the query string has a '%' that starts no %XX escape: send a '%' itself as %25"
NOT_UTF8 = "the query string's %XX escapes are not UTF-8: percent-encode each UTF-8 byte of a character"


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        (b"", None),
        (b"event_type=click&limit=10", None),
        (b"a=%25", None),  # a '%' itself
        (b"a=%e2%82%ac&b=%E2%82%AC", None),  # euro sign, either case of hex
        (b"a=%2b%2B+", None),
        (b"a=%00", None),  # NUL is UTF-8; what the parameter makes of it is its own check
        (b"a=caf\xc3\xa9", None),  # raw UTF-8 bytes
        (b"a=" + b"%41" * 50_000, None),
        (b"a=%", LONE_PERCENT),
        (b"a=%2", LONE_PERCENT),
        (b"a=%ZZ", LONE_PERCENT),
        (b"a=%%41", LONE_PERCENT),
        (b"a=100%&b=1", LONE_PERCENT),
        (b"%FF%", LONE_PERCENT),  # both wrong: the '%' is told first
        (b"a=" + b"%41" * 50_000 + b"%", LONE_PERCENT),
        (b"a=%FF", NOT_UTF8),
        (b"a=%C3", NOT_UTF8),  # a character cut short
        (b"a=%C3%A9%C3", NOT_UTF8),
        (b"a=%C0%AF", NOT_UTF8),  # an overlong '/'
        (b"a=%ED%A0%80", NOT_UTF8),  # a surrogate, which UTF-8 may not hold
        (b"a=\xff", NOT_UTF8),
    ],
)
def test_a_query_string_starlette_would_misread_is_told(query: bytes, problem: str | None) -> None:
    assert _encoding_problem(query) == problem


@pytest.mark.parametrize(
    ("body", "repeated"),
    [
        (b'{"user_id":"a","user_id":"b"}', ["user_id"]),
        (b'{"a":1,"a":2,"a":3}', ["a"]),  # once however often
        (b'{"b":1,"a":1,"b":2,"a":2}', ["a", "b"]),
        (b'{"x":{"b":1,"b":2}}', ["b"]),  # at any depth
        (b'[{"a":1},{"c":[{"d":1,"d":1}]}]', ["d"]),
        (b'{"\\u0061":1,"a":2}', ["a"]),  # an escape spells the same name
        (b'{"user_id":"a","user_id":"b"}'.decode().encode("utf-16"), ["user_id"]),  # JSON's other encodings
        (b'{"A":1,"a":2}', []),
        (b'{"a":{"a":1}}', []),  # one each in two objects
        (b'{"a":1}', []),
        (b"{}", []),
        (b"[1, 2]", []),
        (b"", []),  # no JSON: the route's own parsing answers
        (b"not json", []),
        (b"\xff", []),
        (b'{"a":1,"a":2', []),
        (b"[" * 100_000 + b"]" * 100_000, []),  # too deep for json: a 500 before
    ],
)
def test_the_names_a_body_gives_twice_are_found(body: bytes, repeated: list[str]) -> None:
    assert _repeated_fields(body) == repeated


def test_each_name_given_twice_is_told_once_among_the_first_five() -> None:
    body = b"[" + b",".join([b'{"a":1,"a":2}'] * 5 + [b'{"b":1,"b":2}']) + b"]"
    assert _repeated_fields(body)[:5] == ["a", "b"]


@pytest.mark.parametrize(
    ("annotation", "repeatable"),
    [
        (list[str], True),
        (list[str] | None, True),
        (typing.Optional[list[str]], True),  # noqa: UP045 -- the older spelling is a typing.Union
        (typing.Union[list[str], None], True),  # noqa: UP007
        (str, False),
        (str | None, False),
        (int | None, False),
        (tuple[str, ...], False),
    ],
)
def test_a_list_parameter_is_the_one_kind_that_may_repeat(annotation: object, repeatable: bool) -> None:
    assert _is_list(annotation) is repeatable
