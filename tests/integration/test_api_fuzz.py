"""Property-based fuzzing of the API from its own OpenAPI document, and of its cursors from arbitrary
JSON and bytes: no input earns a 5xx."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from schemathesis import Case
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from eventpipe.api.app import create_app
from eventpipe.api.assembly import admin
from eventpipe.api.cursor import Cursors
from eventpipe.api.keyring import Keyring
from eventpipe.config import Settings
from eventpipe.events.condition import parse_condition, parse_field
from eventpipe.events.metric import parse_metric
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import AUTH, ERASURE_SECRET, KEY, event, readonly_reader, rejection
from tests.support.shared import SharedStores

MARCH_MS = 1_772_323_200_000


OPERATIONS = (
    "/events",
    "/events/{event_id}",
    "/stats/event-types",
    "/stats/timeseries",
    "/stats/breakdown",
    "/dead-letters",
    "/export",
    "/feed",
    "/readyz",
)


def fuzz_data(dsn: str) -> str:
    """`dsn`, migrated, with data in every answer's shape: nested properties, null users, binary dead letters."""
    client = connect(dsn)
    migrate(client)
    writer = Writer(client)
    writer.insert_events(
        [
            event(f"events/t{i % 4}", {"event_id": f"f{i}", "timestamp": MARCH_MS + i, "x": {"y": [i, None]}}, MARCH_MS)
            for i in range(40)
        ]
    )
    writer.insert_dead_letters([rejection("events/bad", b"\xff" + bytes([i]), MARCH_MS + i) for i in range(5)])
    return dsn


def fuzz_schema(dsn: str, keys: Sequence[str] | Keyring = (KEY,)) -> BaseSchema:
    operations = admin(Settings(clickhouse_dsn=dsn, erasure_secret=ERASURE_SECRET))
    app = create_app(readonly_reader(dsn), CollectorRegistry(), keys, backups=Backups(connect(dsn)), admin=operations)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# Hypothesis inside the test, not schemathesis' pytest plugin, whose lazy
# fixture loading does not work with pytest 9.
@pytest.mark.parametrize(
    ("path", "mode"),
    [
        (path, mode)
        for path in OPERATIONS
        for mode in GenerationMode
        if not (path == "/readyz" and mode is GenerationMode.NEGATIVE)  # it takes nothing to get wrong
    ],
)
def test_no_generated_request_gets_a_server_error(shared_stores: SharedStores, path: str, mode: GenerationMode) -> None:
    # GET routes only read: their runs share one store.
    operation = fuzz_schema(shared_stores.get(fuzz_data))[path]["GET"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Case) -> None:
        # Status, content type and body are validated against the document; any 5xx fails.
        # Two checks are off. A schema-valid value may still be refused with a
        # 422 that says why (a 13th month, since after until, a forged cursor);
        # and a "schema-violating" null reaches a query string as an empty
        # value, which the API reads as "no filter", as forms send it.
        case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance, negative_data_rejection])

    check()


@pytest.mark.parametrize("path", OPERATIONS)
def test_a_scoped_and_limited_key_gets_documented_answers_only(
    shared_stores: SharedStores, tmp_path: Path, path: str
) -> None:
    # Its 403s (dead letters) and 429s (past 30 requests) must be in the document as well, and never a 5xx.
    keys_file = tmp_path / "keys.json"
    scoped = {"name": "scoped", "sha256": hashlib.sha256(KEY.encode()).hexdigest(), "event_types": ["t1", "t3"]}
    keys_file.write_text(json.dumps({"keys": [{**scoped, "requests_per_minute": 30}]}))
    operation = fuzz_schema(shared_stores.get(fuzz_data), Keyring((), keys_file))[path]["GET"]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Case) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance, negative_data_rejection])

    check()


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("admin", [True, False], ids=["admin", "not-admin"])
def test_the_admin_routes_answer_documented_statuses_only(clickhouse_dsn: str, method: str, admin: bool) -> None:
    # Each POST takes a real backup: few examples. POST takes no parameters but unknown ones; GET a page's
    # limit and cursor, where a cursor this API did not issue is the one documented 422.
    keys = Keyring((), generated=KEY) if admin else Keyring([KEY])
    operation = fuzz_schema(fuzz_data(clickhouse_dsn), keys)["/admin/backups"][method]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Case) -> None:
        response = case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])
        forged = admin and (case.query or {}).get("cursor") and response.json().get("detail", "").startswith("cursor:")
        assert response.status_code == (422 if forged else 200 if admin else 403), response.text

    check()


# Replay and erasure, as an admin key: whatever the body or parameters, a documented answer, never a 5xx.
# An erasure waits for several deletes: fewer examples of it keep the run short.
ADMIN_OPERATIONS = (
    ("/admin/dead-letters/replay", "POST", 80),
    ("/admin/erase", "POST", 25),
    ("/admin/erasures", "GET", 80),
)


@pytest.mark.parametrize("mode", list(GenerationMode))
@pytest.mark.parametrize(("path", "method", "examples"), ADMIN_OPERATIONS)
def test_replay_and_erasure_get_no_server_error(
    clickhouse_dsn: str, path: str, method: str, examples: int, mode: GenerationMode
) -> None:
    operation = fuzz_schema(fuzz_data(clickhouse_dsn), Keyring((), generated=KEY))[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Case) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance, negative_data_rejection])

    check()


# Cursors built from anything a client can put in one. The app signs with a
# secret the test knows, so it can also sign what the API would never issue.
CURSOR_KEY = "fuzz-test-cursor-secret-0123456789abcdef"
SIGNER = Cursors(CURSOR_KEY)
TAG_BYTES, HEADER = 16, struct.Struct(">B8sQ")  # the documented layout: tag, version, scope, time, id
VERSION, TIED = 2, 3
LIST_ROUTES = ("/events", "/dead-letters")
# Any character, lone surrogates included (hypothesis leaves them out unless asked).
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)
HUGE_INTS = st.integers(min_value=-(2**100), max_value=2**100) | st.sampled_from([-1, 10**13, 2**63, 2**64])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | HUGE_INTS | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
    max_leaves=20,
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def json_bytes(value: object, ascii_only: bool) -> bytes:
    # Lone surrogates go out as \ud800 escapes, or as the raw bytes a sloppy encoder writes.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def cursor_data(dsn: str) -> str:
    client = connect(dsn)
    migrate(client)
    writer = Writer(client)
    writer.insert_events(
        [event("events/t", {"event_id": f"c{i}", "timestamp": MARCH_MS + i}, MARCH_MS) for i in range(6)]
    )
    writer.insert_dead_letters([rejection("events/bad", b"\xff" + bytes([i]), MARCH_MS + i) for i in range(6)])
    return dsn


def cursor_client(shared_stores: SharedStores) -> TestClient:
    """The API, signing cursors with CURSOR_KEY, on a store of six events and six dead letters that the
    cursor tests only read."""
    app = create_app(readonly_reader(shared_stores.get(cursor_data)), CollectorRegistry(), [KEY], CURSOR_KEY)
    return TestClient(app, raise_server_exceptions=False)


def issued(client: TestClient, path: str) -> bytes:
    """The raw bytes of a cursor the API issued for `path`'s first page."""
    text = client.get(path, params={"limit": 2}, headers=AUTH).json()["next_cursor"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def looks_valid(path: str, version: int, made_for: bytes, scope: bytes, time_ms: int, last_id: bytes) -> bool:
    """As the cursor's layout says (api.cursor): version 2 is an id; 3 is the id's length in 2 bytes,
    the id, then a type of 1 to 128 characters. /events takes only 3 (its pages order by type too)."""
    if path == "/events" and version != TIED:
        return False
    if version == TIED:
        length = int.from_bytes(last_id[:2], "big")
        last_id, tie = last_id[2 : 2 + length], last_id[2 + length :]
        try:
            valid_tie = len(last_id) == length and 0 < len(tie.decode()) <= 128
        except UnicodeDecodeError:
            return False
        if not valid_tie:
            return False
    try:
        text = last_id.decode()
    except UnicodeDecodeError:
        return False
    return version in (VERSION, TIED) and made_for == scope and time_ms < 10**13 and 0 < len(text) <= 128


@pytest.mark.parametrize("path", LIST_ROUTES)
def test_cursors_from_arbitrary_json_and_bytes_get_a_422_never_a_5xx(shared_stores: SharedStores, path: str) -> None:
    client = cursor_client(shared_stores)
    real = issued(client, path)
    scope = real[TAG_BYTES + 1 : TAG_BYTES + 9]  # this query's, so forgeries get past the scope check
    old_scope = scope.hex()  # the unsigned format's spelling of it

    unsigned_json = st.builds(json_bytes, JSON_VALUES, st.booleans()).map(b64)
    # The pre-signing layout, right version and scope: once a way to reach a query with any id.
    unsigned_old_format = st.builds(
        lambda *fields: b64(json_bytes(list(fields), False)),
        st.sampled_from([1, 2]),
        HUGE_INTS,
        ANY_TEXT | JSON_VALUES,
        st.just(old_scope) | ANY_TEXT,
    )
    signed_json = st.builds(json_bytes, JSON_VALUES, st.booleans()).map(SIGNER.seal)
    unsigned_bytes = st.binary(max_size=700).map(b64)
    flipped = st.integers(0, len(real) * 8 - 1).map(
        lambda bit: b64(bytes(byte ^ (1 << bit % 8) if i == bit // 8 else byte for i, byte in enumerate(real)))
    )
    forged = st.one_of(
        unsigned_json, unsigned_old_format, signed_json, unsigned_bytes, flipped, st.text(max_size=80)
    ).filter(bool)  # an empty cursor is no cursor: the first page, as for an empty filter

    def check(text: str, expected: int) -> None:
        response = client.get(path, params={"cursor": text, "limit": 2}, headers=AUTH)
        assert response.status_code == expected, (text, response.text)
        if expected == 422:
            body: dict[str, Any] = response.json()
            assert body["error"] == "invalid_parameter" and body["detail"].startswith("cursor: "), body

    @given(text=forged)
    @example(text=b64(json_bytes([1, MARCH_MS, "\ud800", old_scope], True)))  # the forgery that answered 500
    @example(text=b64(json_bytes([1, MARCH_MS, "\ud800", old_scope], False)))
    @example(text=SIGNER.seal(json_bytes([2, MARCH_MS, "\ud800", old_scope], True)))
    @example(text=b64(real[:TAG_BYTES]))
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def forgeries_are_refused(text: str) -> None:
        check(text, 422)

    # What only the key's holder can make: every field is checked behind the signature too.
    @given(
        version=st.sampled_from([0, 1, VERSION, 3, 255]),
        made_for=st.just(scope) | st.binary(min_size=8, max_size=8),
        time_ms=st.integers(0, 2**64 - 1) | st.sampled_from([0, MARCH_MS, 10**13 - 1, 10**13]),
        last_id=st.binary(max_size=600) | ANY_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
    )
    @example(version=VERSION, made_for=scope, time_ms=MARCH_MS, last_id=b"\xed\xa0\x80")  # "\ud800"
    @example(version=VERSION, made_for=scope, time_ms=MARCH_MS, last_id="\x00💩".encode())
    @example(version=TIED, made_for=scope, time_ms=MARCH_MS, last_id=b"\x00\x02idclick")
    @example(version=TIED, made_for=scope, time_ms=MARCH_MS, last_id=b"\x00\x09id")  # the id runs past the end
    @example(version=TIED, made_for=scope, time_ms=MARCH_MS, last_id=b"\x00\x02id\xed\xa0\x80")
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def signed_fields_are_checked(version: int, made_for: bytes, time_ms: int, last_id: bytes) -> None:
        text = SIGNER.seal(HEADER.pack(version, made_for, time_ms) + last_id)
        check(text, 200 if looks_valid(path, version, made_for, scope, time_ms, last_id) else 422)

    forgeries_are_refused()
    signed_fields_are_checked()


# Filters built from the grammar's own parts, and breakdowns of any field by any metric, over properties of
# every JSON kind: a condition the grammar accepts is answered, any other gets a 422, none a 5xx.
TEXT = st.text(max_size=40)  # any character a URL can carry (no lone surrogates)
SEGMENTS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True) | st.sampled_from(["a", "b", "n", "x", "y"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=3) | st.lists(SEGMENTS | TEXT, min_size=1, max_size=10)
PROPERTY_PATHS = PATHS.map(lambda path: "properties." + ".".join(path))
FIELDS = st.one_of(
    st.sampled_from(["event_type", "user_id", "topic"]),
    PROPERTY_PATHS,
    PROPERTY_PATHS,
    st.sampled_from(["properties", "country", ""]),
)
NUMBER_TEXT = st.one_of(
    HUGE_INTS.map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.sampled_from(
        ["1e308", "1e309", "-1e400", "1e-400", "-0", "0.1", "1E+2", "170141183460469231731687303715884105728"]
    ),
)
VALUES = (
    TEXT | NUMBER_TEXT | NUMBER_TEXT | st.sampled_from(["true", "false", "null", "", "' OR 1=1 --", "{limit:UInt32}"])
)
VALID_OPERATORS = st.sampled_from(["=", "!=", ">", ">=", "<", "<="])
OPERATORS = st.one_of(VALID_OPERATORS, VALID_OPERATORS, VALID_OPERATORS, st.sampled_from(["!", "==", "=>", "<>"]))
BUILT = st.builds(lambda field, op, value: field + op + value, FIELDS, OPERATORS, VALUES)
CONDITIONS = st.one_of(BUILT, BUILT, BUILT, TEXT)
METRICS = st.sampled_from(["count", "users", "sum:", "avg:", "min:", "max:", "median:"]).flatmap(
    lambda kind: st.just(kind) if not kind.endswith(":") else FIELDS.map(lambda field: kind + field)
)


def test_any_filter_or_breakdown_is_answered_or_refused_never_a_5xx(clickhouse_dsn: str) -> None:
    client = connect(clickhouse_dsn)
    migrate(client)
    kinds: list[Any] = [0, -1, 2**63, 2**64 - 1, 1.5, 1e308, "x", "", "\u0000", True, False, None, [1], {"y": 2}]
    bodies = [
        {"event_id": f"p{i}", "timestamp": MARCH_MS + i, "user_id": f"u{i % 3}" if i % 4 else None}
        | {"a": kinds[i % len(kinds)], "b": {"n": kinds[(i * 5) % len(kinds)]}, "x": {"y": [i, None]}}
        for i in range(60)
    ]
    Writer(client).insert_events([event(f"events/t{i % 3}", body, MARCH_MS) for i, body in enumerate(bodies)])
    api = TestClient(
        create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), [KEY]), raise_server_exceptions=False
    )
    window = {"since": MARCH_MS, "until": MARCH_MS + 60_000}

    def accepted(parse: Any, *texts: str) -> bool:
        try:
            for text in texts:
                parse(text)
        except ValueError:
            return False
        return True

    @given(where=st.lists(CONDITIONS, min_size=1, max_size=3), by=FIELDS, metric=METRICS)
    @example(
        where=["properties.a>=170141183460469231731687303715884105727"], by="properties.a", metric="sum:properties.a"
    )
    @example(where=["properties.b.n!=1e-400"], by="properties.b.n", metric="max:properties.b.n")
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(where: list[str], by: str, metric: str) -> None:
        valid = all(not text or accepted(parse_condition, text) for text in where) and all(
            len(t) <= 1024 for t in where
        )
        listed = api.get("/events", params={"where": where, "limit": 5}, headers=AUTH)
        assert listed.status_code == (200 if valid else 422), (where, listed.text)
        counted = api.get("/stats/event-types", params={"where": where, **window}, headers=AUTH)
        assert counted.status_code == (200 if valid else 422), (where, counted.text)
        broken_down = api.get(
            "/stats/breakdown", params={"where": where, "by": by, "metric": metric, **window}, headers=AUTH
        )
        ok = valid and accepted(parse_field, by) and accepted(parse_metric, metric)
        if ok and broken_down.status_code == 422:  # 1e308 + 1e308: JSON has no number for it
            assert "overflows a double" in broken_down.json()["detail"], broken_down.text
            return
        assert broken_down.status_code == (200 if ok else 422), (where, by, metric, broken_down.text)
        if ok:
            answer = broken_down.json()
            # An average, a minimum or a maximum of no number has none: null, and no items then.
            if answer["total"] is None:
                assert metric.startswith(("avg:", "min:", "max:")) and answer["items"] == [], answer
            else:
                assert isinstance(answer["total"], int | float)
            assert len(answer["items"]) <= 100
            assert all(isinstance(item["value"], int | float) for item in answer["items"])

    check()


# The feed's tokens: the cursor's sealing around the layout api.bookmark documents.
FEED_HEADER, FEED_KEY = struct.Struct(">B8sQQQQB"), struct.Struct(">QH")
FEED_VERSION = 0x46


def test_feed_tokens_from_arbitrary_bytes_get_a_422_and_signed_fields_never_a_5xx(
    shared_stores: SharedStores,
) -> None:
    client = cursor_client(shared_stores)
    first = client.get("/feed", params={"limit": 2}, headers=AUTH).json()["next"]
    real = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
    scope = real[TAG_BYTES + 1 : TAG_BYTES + 9]

    def answer(text: str) -> int:
        response = client.get("/feed", params={"after": text, "limit": 2}, headers=AUTH)
        if response.status_code == 422:
            assert response.json()["detail"].startswith("after: "), response.text
        return response.status_code

    flipped = st.integers(0, len(real) * 8 - 1).map(
        lambda bit: b64(bytes(byte ^ (1 << bit % 8) if i == bit // 8 else byte for i, byte in enumerate(real)))
    )
    forged = st.one_of(st.binary(max_size=700).map(b64), flipped, st.text(max_size=80)).filter(bool)

    @given(text=forged)
    @example(text=b64(real[:TAG_BYTES]))
    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def forgeries_are_refused(text: str) -> None:
        assert answer(text) == 422

    # What only the key's holder can make: every field is checked, and what passes runs as a query.
    block = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63 - 1, 2**63])
    instant = st.integers(0, 2**64 - 1) | st.sampled_from([0, MARCH_MS, 10**13 - 1, 10**13])
    text_bytes = st.binary(max_size=300) | ANY_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass"))

    @given(
        version=st.sampled_from([0, VERSION, FEED_VERSION, 255]),
        made_for=st.just(scope) | st.binary(min_size=8, max_size=8),
        blocks=st.tuples(block, block),
        instants=st.tuples(instant, instant),
        has_key=st.sampled_from([0, 1, 2]),
        key=st.tuples(instant, st.integers(0, 2**16 - 1), text_bytes, text_bytes),
    )
    @example(  # an odd key inside an epoch: bound as a parameter, answered as data
        version=FEED_VERSION,
        made_for=scope,
        blocks=(0, 5),
        instants=(0, MARCH_MS),
        has_key=1,
        key=(MARCH_MS, 1, b"t", "\x00💩' OR 1=1".encode()),
    )
    @example(
        version=FEED_VERSION, made_for=scope, blocks=(2**63 - 1, 0), instants=(0, 0), has_key=0, key=(0, 0, b"", b"")
    )
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def signed_fields_are_checked(
        version: int,
        made_for: bytes,
        blocks: tuple[int, int],
        instants: tuple[int, int],
        has_key: int,
        key: tuple[int, int, bytes, bytes],
    ) -> None:
        body = FEED_HEADER.pack(version, made_for, *blocks, *instants, has_key)
        if has_key:
            time_ms, type_length, kind, event_id = key
            body += FEED_KEY.pack(time_ms, min(type_length, len(kind))) + kind + event_id
        assert answer(SIGNER.seal(body)) in (200, 422)

    forgeries_are_refused()
    signed_fields_are_checked()
