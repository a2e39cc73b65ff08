"""Parse, validate and normalise one MQTT payload into an event row or a rejection.

Pure functions only: the worker calls `parse` once per message, so this is the
hot path. Work that is rarely needed (depth walk, surrogate check) is guarded by
cheap tests on the raw text.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from eventpipe.events.codec import dumps, loads
from eventpipe.events.shape import depth, json_kind
from eventpipe.events.timestamp import EARLIEST_MS, LATEST_MS, to_epoch_ms

# Namespace for ids derived from topic and payload; never change it, or
# redeliveries of old messages would get new ids and be stored twice.
ID_NAMESPACE = uuid.UUID("5d1c1f0e-7f4e-4c38-9a52-6b3f0e8f2a71")
CONTRACT_FIELDS = ("event_type", "event_id", "timestamp", "user_id")
# eventpipe's own probe events (see ingest.probe): stored like any event,
# left out of what users count and list.
PROBE_EVENT_TYPE = "_probe"
MAX_ID_CHARS = 128
MAX_TYPE_CHARS = 128
MAX_USER_CHARS = 256
BYTE_ORDER_MARK = "\ufeff"


class Reason(StrEnum):
    """Why a message became a dead letter; a bounded set, safe as a metric label."""

    OVERSIZE = "oversize"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_EVENT_TYPE = "missing_event_type"
    INVALID_EVENT_TYPE = "invalid_event_type"
    INVALID_EVENT_ID = "invalid_event_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_USER_ID = "invalid_user_id"
    STORAGE_REJECTED = "storage_rejected"


# The contract's defaults, in one place: Settings offers them as its own (EVENTPIPE_MAX_PAYLOAD_BYTES, ...).
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_FUTURE_SKEW_S = 24 * 3600
ENVELOPE_KEYS = ("event_data", "data")
PROBE_TOPIC = "events/_probe"
# The workers' topic filter by default (EVENTPIPE_MQTT_TOPIC).
TOPIC_FILTER = "events/#"


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_depth: int = MAX_DEPTH
    max_future_skew_ms: int = MAX_FUTURE_SKEW_S * 1000
    # 0: no bound, for a backfill; the worker's bound is a setting (EVENTPIPE_MAX_PAST_DAYS), or the
    # retention when shorter (ingest.limit.limits_from), named in the dead letter's detail.
    max_past_ms: int = 0
    max_past_setting: str = "EVENTPIPE_MAX_PAST_DAYS"
    # The store's retention (EVENTPIPE_RETENTION_DAYS), 0 for none: a replay, long after a letter's
    # receipt, checks its event against it from now (ingest.replay).
    retention_ms: int = 0
    envelope_keys: tuple[str, ...] = ENVELOPE_KEYS
    # The one topic where an event may be of PROBE_EVENT_TYPE: the workers' probes (EVENTPIPE_PROBE_TOPIC).
    probe_topic: str = PROBE_TOPIC
    # The workers' topic filter (EVENTPIPE_MQTT_TOPIC): a topic its `#` matches with no level of its own
    # (`events` under `events/#`) names no event type.
    topic_filter: str = TOPIC_FILTER


class Event(NamedTuple):
    event_id: str
    event_type: str
    timestamp_ms: int
    received_ms: int
    user_id: str | None
    topic: str
    properties: str  # JSON object text
    # Sent without a timestamp, so stamped with its receive time. Said, not guessed from the timestamp
    # equalling the receive time: a dated event sent in the millisecond it arrived is no undated copy.
    # Not a column: the writer stores the first len(EVENT_COLUMNS) fields.
    undated: bool = False


class Rejection(NamedTuple):
    topic: str
    payload: bytes  # as received, cut to the payload limit
    payload_size: int
    received_ms: int
    reason: Reason
    detail: str
    digest: str = ""  # digest_of the whole payload, when `payload` is only its start

    @property
    def dead_letter_id(self) -> str:
        # Stable across redeliveries so the dead_letters table collapses them too. A cut payload's size and
        # digest join it: two oversize messages that began alike were one letter.
        cut = f"\n{self.payload_size}\n{self.digest}" if self.payload_size > len(self.payload) else ""
        return str(uuid.uuid5(ID_NAMESPACE, self.topic + "\n" + self.payload.decode("latin-1") + cut))


def digest_of(payload: bytes) -> str:
    """What tells two payloads apart when their dead letters keep only their start."""
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


class _Invalid(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse(
    topic: str, payload: bytes, received_ms: int, limits: Limits, size: int | None = None, digest: str = ""
) -> Event | Rejection:
    """Turn one message into an `Event`, or a `Rejection` that says why not.

    `size` is the payload's size as sent, when `payload` is only its start, and `digest` its digest_of."""
    size = len(payload) if size is None else size
    try:
        return _parse(topic, payload, received_ms, limits, size)
    except _Invalid as invalid:
        reason, detail = invalid.reason, invalid.detail
    except (ValueError, TypeError, OverflowError) as exc:
        # A case the checks above missed must cost one message, never the pipe.
        reason, detail = Reason.INVALID_JSON, f"payload could not be normalised: {type(exc).__name__}: {exc}"
    if not digest and len(payload) == size > limits.max_payload_bytes:  # whole, and cut here
        digest = digest_of(payload)
    return Rejection(topic, payload[: limits.max_payload_bytes], size, received_ms, reason, detail, digest)


def _parse(topic: str, payload: bytes, received_ms: int, limits: Limits, size: int) -> Event:
    if size > limits.max_payload_bytes or len(payload) > limits.max_payload_bytes:
        raise _Invalid(Reason.OVERSIZE, f"payload is {size} bytes, the limit is {limits.max_payload_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid(Reason.INVALID_UTF8, f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if text[:1] == BYTE_ORDER_MARK:
        # Some encoders write one first (.NET's UTF8Encoding(true), Windows PowerShell): read as JSON, every
        # event of such a producer was an invalid_json dead letter, replayed in vain. RFC 8259, 8.1, lets a
        # parser ignore it. Left out of the text the id is derived from: sent with and without, one event.
        text = text[1:]
    try:
        body = loads(text)
    except RecursionError:
        raise _Invalid(Reason.TOO_DEEP, f"payload nests deeper than {limits.max_depth} levels") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            # Python's own words advise sys.set_int_max_str_digits(), which neither producer nor operator can use.
            raise _Invalid(
                Reason.INVALID_JSON,
                f"payload holds a whole number of over {sys.get_int_max_str_digits():,} digits: send it as a string",
            ) from None
        raise _Invalid(Reason.INVALID_JSON, f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Invalid(Reason.NOT_AN_OBJECT, f"payload is a JSON {json_kind(body)}, not an object")
    # Counting brackets is cheap and bounds the depth from above, so the walk
    # only runs for payloads that could be too deep.
    if text.count("{") + text.count("[") > limits.max_depth and depth(body) > limits.max_depth:
        raise _Invalid(Reason.TOO_DEEP, f"payload nests deeper than {limits.max_depth} levels")

    # The body is ours (just parsed): taking the contract fields out of it
    # leaves the properties, without building a second dict.
    take = body.pop
    event_type, event_id = take("event_type", None), take("event_id", None)
    timestamp, user_id = take("timestamp", None), take("user_id", None)
    if event_type is None or event_id is None or timestamp is None or user_id is None:
        event_type, event_id, timestamp, user_id = _from_envelope(
            body, limits.envelope_keys, event_type, event_id, timestamp, user_id
        )
    event_type = _event_type(event_type, topic, limits)
    event_id = _event_id(event_id, topic, text)
    timestamp_ms = _timestamp(timestamp, received_ms, limits)
    user_id = _user_id(user_id)

    try:
        props_text = dumps(body)
    except ValueError:
        # Out-of-range numbers such as 1e999 parse to inf, which JSON cannot hold.
        raise _Invalid(Reason.INVALID_JSON, "payload holds a number out of range (inf)") from None
    if "\\u" in text:
        _check_encodable(props_text, event_type, event_id, user_id or "")
    return Event(event_id, event_type, timestamp_ms, received_ms, user_id, topic, props_text, timestamp is None)


def _from_envelope(body: dict[str, Any], envelope_keys: tuple[str, ...], *values: Any) -> tuple[Any, ...]:
    """Contract fields missing (or null) at the top level, taken from the first envelope object that has them."""
    found = list(values)
    for key in envelope_keys:
        inner = body.get(key)
        if isinstance(inner, dict):
            for index, name in enumerate(CONTRACT_FIELDS):
                if found[index] is None:
                    found[index] = inner.get(name)
    return tuple(found)


def _event_type(value: object, topic: str, limits: Limits) -> str:
    probe_topic = limits.probe_topic
    if value is None:
        # Under `events/#` the topic `events` itself matches too; its last level is the filter's, no type.
        parent = limits.topic_filter.endswith("#") and topic.count("/") < limits.topic_filter.count("/")
        value = "" if parent else topic.rsplit("/", 1)[-1]
        if not value.strip() or value in ("#", "+"):
            raise _Invalid(Reason.MISSING_EVENT_TYPE, f"no event_type in payload and none in topic {topic!r}")
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(Reason.INVALID_EVENT_TYPE, "event_type must be a non-empty string")
    if len(value) > MAX_TYPE_CHARS:
        raise _Invalid(Reason.INVALID_EVENT_TYPE, f"event_type is longer than {MAX_TYPE_CHARS} characters")
    if value == PROBE_EVENT_TYPE and topic != probe_topic:
        # Stored, it would be hidden from every read like a probe, and move the probe metrics.
        raise _Invalid(
            Reason.INVALID_EVENT_TYPE,
            f"event_type {PROBE_EVENT_TYPE!r} is eventpipe's own, for probes on {probe_topic!r} only",
        )
    return value


def _event_id(value: object, topic: str, text: str) -> str:
    if value is None:
        return str(uuid.uuid5(ID_NAMESPACE, topic + "\n" + text))
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(Reason.INVALID_EVENT_ID, "event_id must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise _Invalid(Reason.INVALID_EVENT_ID, f"event_id is longer than {MAX_ID_CHARS} characters")
    return value


def _timestamp(value: object, received_ms: int, limits: Limits) -> int:
    if value is None:
        return received_ms
    try:
        millis = to_epoch_ms(value)
    except (ValueError, OverflowError) as exc:
        raise _Invalid(Reason.INVALID_TIMESTAMP, str(exc)) from None
    if millis < EARLIEST_MS:
        raise _Invalid(Reason.INVALID_TIMESTAMP, f"timestamp {value!r} is before 2000-01-01")
    if millis >= LATEST_MS:
        raise _Invalid(Reason.INVALID_TIMESTAMP, f"timestamp {value!r} is not before 2106-02-07T06:28:16Z")
    if millis > received_ms + limits.max_future_skew_ms:
        seconds = limits.max_future_skew_ms / 1000
        raise _Invalid(
            Reason.INVALID_TIMESTAMP,
            f"timestamp {value!r} is more than {seconds:g} s after its receipt (EVENTPIPE_MAX_FUTURE_SKEW_S)",
        )
    if limits.max_past_ms and millis < received_ms - limits.max_past_ms:
        days = limits.max_past_ms / 86_400_000
        raise _Invalid(
            Reason.INVALID_TIMESTAMP,
            f"timestamp {value!r} is more than {days:g} days before its receipt ({limits.max_past_setting})",
        )
    return millis


def _user_id(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid(Reason.INVALID_USER_ID, "user_id must be a string or an integer")
    user = str(value)
    if len(user) > MAX_USER_CHARS:
        raise _Invalid(Reason.INVALID_USER_ID, f"user_id is longer than {MAX_USER_CHARS} characters")
    return user


def _check_encodable(*texts: str) -> None:
    # JSON escapes can smuggle lone surrogates, which no UTF-8 column accepts.
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid(Reason.INVALID_JSON, "payload holds an unpaired UTF-16 surrogate escape") from None
