"""The event contract of DESIGN.md: what becomes an event, and why anything else is a dead letter."""

from __future__ import annotations

import json
import uuid

import pytest

from eventpipe.events import Event, Limits, Reason, Rejection, parse
from eventpipe.events.contract import ID_NAMESPACE, digest_of
from eventpipe.events.timestamp import to_epoch_ms

RECEIVED_MS = 1_763_800_000_000  # 2025-11-22T08:26:40Z
LIMITS = Limits()


def event(topic: str, body: object, received_ms: int = RECEIVED_MS, limits: Limits = LIMITS) -> Event:
    result = parse(topic, json.dumps(body).encode(), received_ms, limits)
    assert isinstance(result, Event), result
    return result


def rejection(topic: str, payload: bytes, limits: Limits = LIMITS) -> Rejection:
    result = parse(topic, payload, RECEIVED_MS, limits)
    assert isinstance(result, Rejection), result
    return result


def test_a_full_event_is_normalised_and_the_rest_kept_as_properties() -> None:
    row = event(
        "events/purchase",
        {
            "event_id": "5b0c5a56-0f5e-4c38-8a52-000000000001",
            "event_type": "purchase",
            "timestamp": "2025-11-22T08:00:00.250Z",
            "user_id": "user-7",
            "amount": 19.99,
            "cart": {"items": [{"sku": "A1", "qty": 2}]},
        },
    )
    assert row.event_id == "5b0c5a56-0f5e-4c38-8a52-000000000001"
    assert row.event_type == "purchase"
    assert row.timestamp_ms == 1_763_798_400_250
    assert row.received_ms == RECEIVED_MS
    assert row.user_id == "user-7"
    assert row.topic == "events/purchase"
    assert json.loads(row.properties) == {"amount": 19.99, "cart": {"items": [{"sku": "A1", "qty": 2}]}}


def test_event_type_falls_back_to_the_topics_last_level() -> None:
    assert event("events/shop/checkout", {"x": 1}).event_type == "checkout"


def test_event_type_in_the_payload_wins_over_the_topic() -> None:
    assert event("events/anything", {"event_type": "login"}).event_type == "login"


def test_fields_inside_an_envelope_object_are_found() -> None:
    body = {"event_data": {"event_id": "abc-1", "timestamp": 1_763_798_400, "user_id": 42, "page": "/"}}
    row = event("events/page_view", body)
    assert (row.event_id, row.event_type, row.timestamp_ms, row.user_id) == (
        "abc-1",
        "page_view",
        1_763_798_400_000,
        "42",
    )
    # The envelope stays whole: nothing the producer sent is thrown away.
    assert json.loads(row.properties) == body


def test_a_null_top_level_field_lets_the_envelope_supply_it() -> None:
    assert event("events/x", {"event_id": None, "event_data": {"event_id": "inner"}}).event_id == "inner"


def test_top_level_fields_win_over_the_envelope() -> None:
    row = event("events/x", {"event_id": "top", "event_data": {"event_id": "inner"}})
    assert row.event_id == "top"


def test_an_id_less_payload_gets_the_same_id_on_every_delivery() -> None:
    first = parse("events/click", b'{"button": "buy"}', RECEIVED_MS, LIMITS)
    again = parse("events/click", b'{"button": "buy"}', RECEIVED_MS + 5_000, LIMITS)
    other = parse("events/click", b'{"button": "sell"}', RECEIVED_MS, LIMITS)
    other_topic = parse("events/tap", b'{"button": "buy"}', RECEIVED_MS, LIMITS)
    assert isinstance(first, Event) and isinstance(again, Event)
    assert isinstance(other, Event) and isinstance(other_topic, Event)
    assert first.event_id == again.event_id
    assert len({first.event_id, other.event_id, other_topic.event_id}) == 3


def test_missing_timestamp_means_time_received() -> None:
    assert event("events/x", {"a": 1}).timestamp_ms == RECEIVED_MS


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        ("2025-11-22T08:00:00Z", 1_763_798_400_000),
        ("2025-11-22T09:00:00+01:00", 1_763_798_400_000),
        ("2025-11-22t08:00:00.5z", 1_763_798_400_500),
        ("2025-11-22T08:00:00", 1_763_798_400_000),  # no offset: read as UTC
        ("2025-11-22 08:00:00.123456+00:00", 1_763_798_400_123),
        (1_763_798_400, 1_763_798_400_000),  # epoch seconds
        (1_763_798_400.25, 1_763_798_400_250),
        (1_763_798_400_000, 1_763_798_400_000),  # epoch milliseconds
        ("1763798400000", 1_763_798_400_000),
        ("20251122T080000Z", 1_763_798_400_000),  # basic ISO 8601, no dashes
        ("20251122", 1_763_769_600_000),  # a basic date: as epoch seconds it would be 1970, refused
        (1_763_798_400_000_000, 1_763_798_400_000),  # microseconds
        ("Sat, 22 Nov 2025 08:00:00 GMT", 1_763_798_400_000),  # an HTTP date, as the seed system sends
        ("Sat, 22 Nov 2025 10:00:00 +0200", 1_763_798_400_000),  # RFC 2822 with a numeric zone
        ("Fri, 21 Nov 2025 23:30:00 -0830", 1_763_798_400_000),
        ("22 Nov 2025 08:00 UT", 1_763_798_400_000),  # no weekday, no seconds
        ("Sat, 22 Nov 2025 08:00:00 Z", 1_763_798_400_000),
        ("Sat, 22 Nov 2025 08:00:00 z", 1_763_798_400_000),
        ("sat, 22 nov 2025 08:00:00 gmt", 1_763_798_400_000),
        ("Sat, 22 Nov 2025 08:00:00 -0000", 1_763_798_400_000),  # RFC 2822: UTC, local zone unknown
        ("2025-11-22 08:00:00Z", 1_763_798_400_000),  # RFC 3339 with a space for the T
        ("2025-11-22 10:00:00+02:00", 1_763_798_400_000),
    ],
)
def test_timestamps_in_every_accepted_form(value: object, expected_ms: int) -> None:
    assert event("events/x", {"timestamp": value}).timestamp_ms == expected_ms


@pytest.mark.parametrize(
    "payload",
    [b'  {"a": 1}', b'{"a": 1}\n', b'\t{"a": 1} \r\n'],
)
def test_whitespace_around_the_object_is_json_too(payload: bytes) -> None:
    result = parse("events/x", payload, RECEIVED_MS, LIMITS)
    assert isinstance(result, Event)
    assert json.loads(result.properties) == {"a": 1}


def test_a_leading_byte_order_mark_is_ignored_and_the_event_is_the_one_sent_without_it() -> None:
    # Some encoders write one first (.NET's UTF8Encoding(true), Windows PowerShell's UTF8): read as JSON,
    # every event of such a producer was an invalid_json dead letter ("Expecting value: line 1 column 1"),
    # and replaying them failed again. RFC 8259, 8.1, lets a parser ignore it.
    plain = b'{"button": "buy", "timestamp": "2025-11-22T08:00:00Z"}'
    marked = parse("events/click", b"\xef\xbb\xbf" + plain, RECEIVED_MS, LIMITS)
    assert isinstance(marked, Event)
    assert marked == parse("events/click", plain, RECEIVED_MS, LIMITS)  # the id derived from the same text
    # One mark, where a JSON text starts: a second is no JSON.
    assert rejection("events/x", b"\xef\xbb\xbf\xef\xbb\xbf{}").reason == Reason.INVALID_JSON


@pytest.mark.parametrize("payload", [b'{"a": 1} {"b": 2}', b'{"a": 1}x', b' {"a": '])
def test_anything_after_or_around_the_object_that_is_not_json_is_rejected(payload: bytes) -> None:
    assert rejection("events/x", payload).reason == Reason.INVALID_JSON


def test_the_type_comes_from_the_level_the_filters_wildcard_matched() -> None:
    assert parse("events", b'{"event_type": "click"}', RECEIVED_MS, LIMITS).event_type == "click"  # type: ignore[union-attr]
    assert parse("events/a/b", b"{}", RECEIVED_MS, LIMITS).event_type == "b"  # type: ignore[union-attr]
    tenant = Limits(topic_filter="tenants/+/events/#")
    assert rejection("tenants/t1/events", b"{}", tenant).reason == Reason.MISSING_EVENT_TYPE
    assert parse("tenants/t1/events/view", b"{}", RECEIVED_MS, tenant).event_type == "view"  # type: ignore[union-attr]
    exact = Limits(topic_filter="events/+")
    assert parse("events/view", b"{}", RECEIVED_MS, exact).event_type == "view"  # type: ignore[union-attr]


def test_a_whole_number_too_long_for_python_is_a_dead_letter_saying_what_to_send() -> None:
    refused = rejection("events/x", b'{"n": ' + b"7" * 4301 + b"}")
    assert refused.reason == Reason.INVALID_JSON
    assert refused.detail == "payload holds a whole number of over 4,300 digits: send it as a string"
    assert isinstance(parse("events/x", b'{"n": ' + b"7" * 4300 + b"}", RECEIVED_MS, LIMITS), Event)


def test_properties_keep_text_as_sent_and_leave_out_null_contract_fields() -> None:
    row = event("events/x", {"user_id": None, "city": "Zürich", "tags": ["ß", {"n": None}], "n": 1.5})
    assert row.user_id is None
    assert row.properties == '{"city":"Zürich","tags":["ß",{"n":null}],"n":1.5}'


@pytest.mark.parametrize("value", ["2025-11-22T08:00:00Z\x00junk", "2025-11-22\x00", "\x0020251122"])
def test_a_time_with_a_nul_in_it_is_refused_not_read_up_to_the_nul(value: str) -> None:
    # datetime.fromisoformat stops at a NUL: the event was stored at the time before it, and the API
    # answered since=...Z%00garbage with 200 (an attack).
    refused = rejection("events/x", json.dumps({"timestamp": value}).encode())
    assert refused.reason == Reason.INVALID_TIMESTAMP and "NUL" in refused.detail, refused.detail
    with pytest.raises(ValueError, match="NUL"):
        to_epoch_ms(value)


def test_numeric_strings_are_numbers_and_dashed_ones_dates() -> None:
    assert to_epoch_ms(" -1763798400 ") == -1_763_798_400_000
    assert to_epoch_ms("2025-11-22") == 1_763_769_600_000


@pytest.mark.parametrize(
    ("text", "down", "up"),
    [
        ("2025-11-22T00:00:00.0005Z", 1_763_769_600_000, 1_763_769_600_001),
        ("2025-11-21T23:59:59.9995Z", 1_763_769_599_999, 1_763_769_600_000),
        ("2025-11-22T00:00:00.001Z", 1_763_769_600_001, 1_763_769_600_001),
        ("2025-11-22T01:00:00.0005+01:00", 1_763_769_600_000, 1_763_769_600_001),
        ("Sat, 22 Nov 2025 00:00:00 GMT", 1_763_769_600_000, 1_763_769_600_000),
        ("1763769600.0004", 1_763_769_600_000, 1_763_769_600_001),
        ("1763769600000.5", 1_763_769_600_000, 1_763_769_600_001),
        ("1763769600000000001", 1_763_769_600_000, 1_763_769_600_001),
        # 261.261 s is 261261.00000000003 ms as a float: rounded up, the float would say 261262.
        ("261.261", 261_261, 261_261),
        # Past the 28 digits of Decimal's default context, and past the microseconds datetime keeps.
        ("1763769600.00000000000000000001", 1_763_769_600_000, 1_763_769_600_001),
        ("2025-11-22T00:00:00.0000001Z", 1_763_769_600_000, 1_763_769_600_001),
        ("2025-11-21T23:59:59.9999990000Z", 1_763_769_599_999, 1_763_769_600_000),
        ("2025-11-22T00:00:00.0010000000Z", 1_763_769_600_001, 1_763_769_600_001),
        ("-1.0005", -1_000, -1_000),
        # A leap second (RFC 3339 allows second 60), read as the next minute's start, as PostgreSQL does.
        ("2016-12-31T23:59:60Z", 1_483_228_800_000, 1_483_228_800_000),
        ("2016-12-31T23:59:60.5Z", 1_483_228_800_500, 1_483_228_800_500),
        ("2017-01-01T00:59:60+01:00", 1_483_228_800_000, 1_483_228_800_000),
        # The last microsecond a datetime holds, and more digits: adding one to it overflowed (a 500).
        ("9999-12-31T23:59:59.9999999Z", 253_402_300_799_999, 253_402_300_800_000),
        ("9999-12-31T23:59:59.999Z", 253_402_300_799_999, 253_402_300_799_999),
        # The other ISO 8601 forms README names: each one instant.
        ("20251122T000000Z", 1_763_769_600_000, 1_763_769_600_000),
        ("2025-W47-6", 1_763_769_600_000, 1_763_769_600_000),
        ("2025-11-22T00Z", 1_763_769_600_000, 1_763_769_600_000),
    ],
)
def test_a_window_bound_between_two_milliseconds_rounds_up_and_an_event_time_as_before(
    text: str, down: int, up: int
) -> None:
    assert to_epoch_ms(text) == down
    assert to_epoch_ms(text, up=True) == up


@pytest.mark.parametrize("up", [False, True])
def test_the_leap_second_ending_year_9999_is_out_of_range_not_an_overflow(up: bool) -> None:
    # An OverflowError escaped the API's 422 for bad bounds: a 500 on every read route.
    with pytest.raises(ValueError, match="past the year 9999"):
        to_epoch_ms("9999-12-31T23:59:60Z", up=up)


def test_user_id_is_optional_and_numbers_become_strings() -> None:
    assert event("events/x", {}).user_id is None
    assert event("events/x", {"user_id": 1234}).user_id == "1234"


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("events/x", b"\xff\xfe{}", Reason.INVALID_UTF8),
        ("events/x", b'{"a": ', Reason.INVALID_JSON),
        ("events/x", b"", Reason.INVALID_JSON),
        ("events/x", b'{"a": NaN}', Reason.INVALID_JSON),
        ("events/x", b'{"a": "\\ud800"}', Reason.INVALID_JSON),
        ("events/x", b'{"user_id": "\\udfff"}', Reason.INVALID_JSON),
        ("events/x", b'{"event_id": "a\\ud800"}', Reason.INVALID_JSON),
        ("events/x", b'{"amount": 1e999}', Reason.INVALID_JSON),
        ("events/x", b"[1, 2]", Reason.NOT_AN_OBJECT),
        ("events/x", b'"hello"', Reason.NOT_AN_OBJECT),
        ("events/x", b"null", Reason.NOT_AN_OBJECT),
        ("events/", b"{}", Reason.MISSING_EVENT_TYPE),
        ("events", b"{}", Reason.MISSING_EVENT_TYPE),  # events/# matches it, and its level is the filter's
        ("events/x", b'{"event_type": 7}', Reason.INVALID_EVENT_TYPE),
        ("events/x", b'{"event_type": "  "}', Reason.INVALID_EVENT_TYPE),
        ("events/x", b'{"event_type": "' + b"t" * 200 + b'"}', Reason.INVALID_EVENT_TYPE),
        ("events/x", b'{"event_id": 17}', Reason.INVALID_EVENT_ID),
        ("events/x", b'{"event_id": ""}', Reason.INVALID_EVENT_ID),
        ("events/x", b'{"event_id": "' + b"i" * 200 + b'"}', Reason.INVALID_EVENT_ID),
        ("events/x", b'{"timestamp": "yesterday"}', Reason.INVALID_TIMESTAMP),
        ("events/x", b'{"timestamp": true}', Reason.INVALID_TIMESTAMP),
        ("events/x", b'{"timestamp": {"s": 1}}', Reason.INVALID_TIMESTAMP),
        ("events/x", b'{"timestamp": 0}', Reason.INVALID_TIMESTAMP),
        ("events/x", b'{"timestamp": "3025-01-01T00:00:00Z"}', Reason.INVALID_TIMESTAMP),
        ("events/x", b'{"timestamp": 1e300}', Reason.INVALID_TIMESTAMP),
        ("events/x", b'{"user_id": {"id": 1}}', Reason.INVALID_USER_ID),
        ("events/x", b'{"user_id": true}', Reason.INVALID_USER_ID),
    ],
)
def test_every_unusable_payload_is_rejected_with_its_reason(topic: str, payload: bytes, reason: Reason) -> None:
    result = rejection(topic, payload)
    assert result.reason == reason
    assert result.detail
    assert result.payload == payload
    assert result.topic == topic


def test_too_deep_payloads_are_rejected_but_wide_ones_are_not() -> None:
    limits = Limits(max_depth=8)
    deep = b'{"a":' * 9 + b"1" + b"}" * 9
    assert rejection("events/x", deep, limits).reason == Reason.TOO_DEEP
    wide = json.dumps({"items": [{"k": [i]} for i in range(50)]}).encode()
    assert isinstance(parse("events/x", wide, RECEIVED_MS, limits), Event)


def test_pathologically_deep_payloads_do_not_crash_the_parser() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert rejection("events/x", deep, Limits(max_payload_bytes=1_000_000)).reason == Reason.TOO_DEEP


def test_oversize_payloads_are_rejected_and_kept_cut_to_the_limit() -> None:
    limits = Limits(max_payload_bytes=1024)
    payload = json.dumps({"blob": "x" * 5000}).encode()
    result = rejection("events/x", payload, limits)
    assert result.reason == Reason.OVERSIZE
    assert result.payload == payload[:1024]
    assert result.payload_size == len(payload)


def test_a_payload_cut_on_receipt_is_judged_and_reported_by_its_size_as_sent() -> None:
    # The consumer keeps only limit + 1 bytes of a huge payload; the size sent travels beside it.
    limits = Limits(max_payload_bytes=1024)
    result = parse("events/x", b"{" * 1025, RECEIVED_MS, limits, size=50_000_000)
    assert isinstance(result, Rejection)
    assert (result.reason, result.payload_size, len(result.payload)) == (Reason.OVERSIZE, 50_000_000, 1024)
    assert "50000000 bytes" in result.detail


def test_oversize_payloads_that_begin_alike_are_two_letters_and_a_redelivery_one() -> None:
    # Cut to the limit, two payloads with the same first 64 KiB were one letter, the second's row only.
    start = b"x" * LIMITS.max_payload_bytes
    first, second = (rejection("events/ov", start + tail) for tail in (b"a" * 10, b"b" * 34))
    assert first.reason == second.reason == Reason.OVERSIZE
    assert first.dead_letter_id != second.dead_letter_id
    assert rejection("events/ov", start + b"a" * 10).dead_letter_id == first.dead_letter_id
    # Of one size too (a review): the whole payload's digest tells them apart, as the worker, which keeps
    # only the start of an oversize payload, passes it.
    same_size = [rejection("events/ov", start + tail) for tail in (b"A" * 10, b"B" * 10)]
    assert same_size[0].dead_letter_id != same_size[1].dead_letter_id
    cut_early = parse(
        "events/ov",
        (start + b"A" * 10)[: LIMITS.max_payload_bytes + 1],
        RECEIVED_MS,
        LIMITS,
        len(start) + 10,
        digest_of(start + b"A" * 10),
    )
    assert isinstance(cut_early, Rejection) and cut_early.dead_letter_id == same_size[0].dead_letter_id
    # Whole payloads keep the id they always had: letters stored before this are found by it.
    assert rejection("events/y", b"not json").dead_letter_id == str(uuid.uuid5(ID_NAMESPACE, "events/y\nnot json"))


def test_a_redelivered_rejection_keeps_its_dead_letter_id() -> None:
    first = rejection("events/x", b"not json")
    again = parse("events/x", b"not json", RECEIVED_MS + 10, LIMITS)
    assert isinstance(again, Rejection)
    assert first.dead_letter_id == again.dead_letter_id
    assert first.dead_letter_id != rejection("events/y", b"not json").dead_letter_id


def test_timestamps_further_back_than_the_past_bound_are_rejected_and_the_reason_names_the_setting() -> None:
    day_ms = 86_400_000
    bounded = Limits(max_past_ms=90 * day_ms)
    assert event("events/x", {"timestamp": RECEIVED_MS - 90 * day_ms}, limits=bounded).timestamp_ms == (
        RECEIVED_MS - 90 * day_ms
    )
    old = parse("events/x", json.dumps({"timestamp": RECEIVED_MS - 90 * day_ms - 1}).encode(), RECEIVED_MS, bounded)
    assert isinstance(old, Rejection)
    assert old.reason is Reason.INVALID_TIMESTAMP
    assert "more than 90 days before its receipt (EVENTPIPE_MAX_PAST_DAYS)" in old.detail
    # No bound (0): a backfill of events from 2001 goes in.
    assert event("events/x", {"timestamp": "2001-01-01T00:00:00Z"}).timestamp_ms == 978_307_200_000


def test_the_past_bound_comes_from_the_settings_and_zero_lifts_it() -> None:
    from eventpipe.config import Settings
    from eventpipe.ingest.limit import limits_from

    base = {"mqtt_url": "mqtt://127.0.0.1:1883", "clickhouse_dsn": "chdb:///tmp/x"}
    assert limits_from(Settings(**base)).max_past_ms == 730 * 86_400_000  # type: ignore[arg-type]
    assert limits_from(Settings(**base, max_past_days=0)).max_past_ms == 0  # type: ignore[arg-type]


def test_an_event_older_than_the_retention_is_a_dead_letter_not_a_silent_expiry() -> None:
    from eventpipe.config import Settings
    from eventpipe.ingest.limit import limits_from

    # The TTL drops such an event as it is inserted: it was acknowledged and counted as stored, and
    # no read, dead letter or metric showed it again.
    base = {"mqtt_url": "mqtt://127.0.0.1:1883", "clickhouse_dsn": "chdb:///tmp/x", "retention_days": 30}
    for past in (730, 0):
        limits = limits_from(Settings(**base, max_past_days=past))  # type: ignore[arg-type]
        assert limits.max_past_ms == 30 * 86_400_000, past
        old = parse("events/x", json.dumps({"timestamp": RECEIVED_MS - 60 * 86_400_000}).encode(), RECEIVED_MS, limits)
        assert isinstance(old, Rejection) and old.reason is Reason.INVALID_TIMESTAMP
        assert "more than 30 days before its receipt (EVENTPIPE_RETENTION_DAYS)" in old.detail
    # A retention longer than the bound leaves the bound.
    assert limits_from(Settings(**base | {"retention_days": 1000})).max_past_ms == 730 * 86_400_000  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Sat, 22 Nov 2025 08:00:00", "no accepted form"),  # no zone: local time of where?
        ("Sat, 22 Nov 2025 08:00:00 CST", "no accepted form"),  # China or Central?
        ("11/22/2025 08:00:00", "no accepted form"),  # 22 November or, elsewhere, nonsense
        ("22/11/2025 08:00:00", "no accepted form"),
        ("Mon, 22 Nov 2025 08:00:00 GMT", "22 Nov 2025 is a Sat, not a Mon"),
        ("Sat, 31 Feb 2025 08:00:00 GMT", "not a real date"),
        ("Sat, 22 Noe 2025 08:00:00 GMT", "not a month name"),
        ("Sat, 22 Nov 2025 08:00:00 +2400", "not an offset"),
        ("2025-02-30T08:00:00Z", "no accepted form"),  # impossible, with the Z the error must not rewrite
        ("Sat, 31 Feb 2025 08:00:00 Z", "not a real date"),
        ("Sat, 22 Nov \uff12\uff10\uff12\uff15 08:00:00 GMT", "no accepted form"),  # full-width digits: not RFC 2822's
        ("Sat, 22\u2003Nov 2025 08:00:00 GMT", "no accepted form"),  # an em space
    ],
)
def test_ambiguous_or_impossible_dates_are_dead_letters_that_name_the_accepted_forms(value: str, says: str) -> None:
    result = rejection("events/x", json.dumps({"timestamp": value}).encode())
    assert result.reason is Reason.INVALID_TIMESTAMP
    assert says in result.detail
    assert repr(value) in result.detail  # quoted as the producer sent it
    if says == "no accepted form":
        assert "RFC 3339" in result.detail and "HTTP or RFC 2822" in result.detail and "epoch" in result.detail


def test_the_probe_type_is_refused_on_any_topic_but_the_probe_topic() -> None:
    # Stored, a producer's `_probe` was hidden from every read and moved the probe metrics.
    for topic, body in [
        ("events/orders", {"event_type": "_probe", "event_id": "p1"}),
        ("events/_probe", {"event_type": "_probe", "event_id": "p1"}),
        ("events/x/_probe", {"event_id": "p1"}),  # the type from the topic
    ]:
        parsed = parse(topic, json.dumps(body).encode(), RECEIVED_MS, Limits(probe_topic="events/health"))
        assert isinstance(parsed, Rejection) and parsed.reason is Reason.INVALID_EVENT_TYPE, (topic, parsed)
        assert "for probes on 'events/health' only" in parsed.detail
    probe = parse(
        "events/health", b'{"event_type": "_probe", "event_id": "p1"}', RECEIVED_MS, Limits(probe_topic="events/health")
    )
    assert isinstance(probe, Event) and probe.event_type == "_probe"


def test_timestamps_further_ahead_than_the_skew_bound_are_rejected_and_the_reason_names_the_setting() -> None:
    skewed = Limits(max_future_skew_ms=60_000)
    assert event("events/x", {"timestamp": RECEIVED_MS + 60_000}, limits=skewed).timestamp_ms == RECEIVED_MS + 60_000
    ahead = parse("events/x", json.dumps({"timestamp": RECEIVED_MS + 60_001}).encode(), RECEIVED_MS, skewed)
    assert isinstance(ahead, Rejection)
    assert ahead.reason is Reason.INVALID_TIMESTAMP
    assert "more than 60 s after its receipt (EVENTPIPE_MAX_FUTURE_SKEW_S)" in ahead.detail


def test_timestamps_from_2106_02_07T06_28_16Z_are_rejected_whatever_the_skew_bound() -> None:
    # Parts' time ranges are 32-bit seconds in ClickHouse: the counts left such events out while pages served them.
    unbounded = Limits(max_future_skew_ms=10**15)
    last = 2**32 * 1000 - 1
    assert event("events/x", {"timestamp": last}, limits=unbounded).timestamp_ms == last
    for late in (2**32 * 1000, "2262-04-11T23:30:00Z"):
        refused = parse("events/x", json.dumps({"timestamp": late}).encode(), RECEIVED_MS, unbounded)
        assert isinstance(refused, Rejection)
        assert refused.reason is Reason.INVALID_TIMESTAMP
        assert "is not before 2106-02-07T06:28:16Z" in refused.detail


def test_properties_are_stored_with_the_line_breaks_the_api_escapes_already_escaped() -> None:
    # Stored raw (2 or 3 bytes) and served escaped (6), they made a page counted at 8 MiB 24 MB.
    payload = json.dumps({"s": "a\x85b\u2028c\u2029", "k\u2028": ["\u2028"]}, ensure_ascii=False).encode()
    stored = parse("events/x", payload, 1_772_323_200_000, Limits())
    assert isinstance(stored, Event)
    assert stored.properties == '{"s":"a\\u0085b\\u2028c\\u2029","k\\u2028":["\\u2028"]}'
    assert json.loads(stored.properties) == {"s": "a\x85b\u2028c\u2029", "k\u2028": ["\u2028"]}
