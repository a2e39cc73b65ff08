"""Property-based fuzzing of the API from its own OpenAPI document, and of its cursors from arbitrary
JSON and bytes: no input earns a 5xx."""

from __future__ import annotations

import base64
import json
import struct
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
from eventpipe.api.cursor import Cursors
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.writer import Writer
from tests.support.api import AUTH, KEY, event, readonly_reader, rejection

MARCH_MS = 1_772_323_200_000


OPERATIONS = (
    "/events",
    "/events/{event_id}",
    "/stats/event-types",
    "/stats/timeseries",
    "/dead-letters",
    "/export",
    "/readyz",
)


def fuzz_schema(clickhouse_dsn: str) -> BaseSchema:
    client = connect(clickhouse_dsn)
    migrate(client)
    writer = Writer(client)
    # Data in every answer's shape: nested properties, null users, binary dead letters.
    writer.insert_events(
        [
            event(f"events/t{i % 4}", {"event_id": f"f{i}", "timestamp": MARCH_MS + i, "x": {"y": [i, None]}}, MARCH_MS)
            for i in range(40)
        ]
    )
    writer.insert_dead_letters([rejection("events/bad", b"\xff" + bytes([i]), MARCH_MS + i) for i in range(5)])
    app = create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), [KEY])
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
def test_no_generated_request_gets_a_server_error(clickhouse_dsn: str, path: str, mode: GenerationMode) -> None:
    operation = fuzz_schema(clickhouse_dsn)[path]["GET"]

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


# Cursors built from anything a client can put in one. The app signs with a
# secret the test knows, so it can also sign what the API would never issue.
CURSOR_KEY = "fuzz-test-cursor-secret-0123456789abcdef"
SIGNER = Cursors(CURSOR_KEY)
TAG_BYTES, HEADER = 16, struct.Struct(">B8sQ")  # the documented layout: tag, version, scope, time, id
VERSION = 2
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


def cursor_client(clickhouse_dsn: str) -> TestClient:
    client = connect(clickhouse_dsn)
    migrate(client)
    writer = Writer(client)
    writer.insert_events(
        [event("events/t", {"event_id": f"c{i}", "timestamp": MARCH_MS + i}, MARCH_MS) for i in range(6)]
    )
    writer.insert_dead_letters([rejection("events/bad", b"\xff" + bytes([i]), MARCH_MS + i) for i in range(6)])
    app = create_app(readonly_reader(clickhouse_dsn), CollectorRegistry(), [KEY], CURSOR_KEY)
    return TestClient(app, raise_server_exceptions=False)


def issued(client: TestClient, path: str) -> bytes:
    """The raw bytes of a cursor the API issued for `path`'s first page."""
    text = client.get(path, params={"limit": 2}, headers=AUTH).json()["next_cursor"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def looks_valid(version: int, made_for: bytes, scope: bytes, time_ms: int, last_id: bytes) -> bool:
    try:
        text = last_id.decode()
    except UnicodeDecodeError:
        return False
    return version == VERSION and made_for == scope and time_ms < 10**13 and 0 < len(text) <= 128


@pytest.mark.parametrize("path", LIST_ROUTES)
def test_cursors_from_arbitrary_json_and_bytes_get_a_422_never_a_5xx(clickhouse_dsn: str, path: str) -> None:
    client = cursor_client(clickhouse_dsn)
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
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def signed_fields_are_checked(version: int, made_for: bytes, time_ms: int, last_id: bytes) -> None:
        text = SIGNER.seal(HEADER.pack(version, made_for, time_ms) + last_id)
        check(text, 200 if looks_valid(version, made_for, scope, time_ms, last_id) else 422)

    forgeries_are_refused()
    signed_fields_are_checked()
