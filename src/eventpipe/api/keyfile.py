"""The keys file (EVENTPIPE_API_KEYS_FILE): each key's name, the SHA-256 of its secret, and its rights.

    {"keys": [{"name": "partner-a", "sha256": "<64 hex digits>", "event_types": ["purchase"],
               "requests_per_minute": 120, "admin": false}]}

`event_types`, `requests_per_minute` and `admin` are optional: every type, no
limit, not admin. Anything else is refused, with where and why, never with the
value: an unknown field is most likely a misspelt right (`event_type` for
`event_types`), which read as absent would widen what the key sees, and a
`sha256` that is not a hash may well be a key pasted in by mistake.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eventpipe.api.grant import Grant
from eventpipe.events.contract import MAX_TYPE_CHARS

# Names go into metric labels and logs: plain characters, and never '#', which
# marks the names of keys that come from elsewhere (env#1, up#generated).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# A field's name as the file's fields are spelt: shown in errors; anything else may be a key, and is not.
FIELD = re.compile(r"[a-z_]{1,32}")
# One API process answers a few thousand requests a second at most; a window
# costs 8 bytes per request it allows (api.throttle).
MAX_REQUESTS_PER_MINUTE = 100_000
MAX_FILE_BYTES = 16 * 1024 * 1024
# A key of EVENTPIPE_API_KEYS, which has every right: a short one is guessed (a wrong key costs a guesser one
# 401, not throttled), and one with spaces or non-ASCII cannot be sent in an HTTP header, so never matches.
ENV_KEY = re.compile(r"[\x21-\x7e]{16,512}")
SHA256_HINT = "64 hex digits, the SHA-256 of the key (printf %s KEY | sha256sum), never the key itself"


def env_keys_problem(keys: list[str]) -> str | None:
    """Which keys of EVENTPIPE_API_KEYS cannot be used, by position: never the keys themselves."""
    bad = [str(number) for number, key in enumerate(keys, 1) if not ENV_KEY.fullmatch(key)]
    if not bad:
        return None
    return (
        f"key {', '.join(bad)} of {len(keys)} (counted from 1, empty entries skipped): a key is 16 to 512 "
        "visible ASCII characters without spaces; `openssl rand -hex 24` makes one"
    )


class KeyFileError(ValueError):
    """The file cannot be used; the message says where in it and why."""


class Entry(NamedTuple):
    """A key the API admits: the SHA-256 digest of its secret, and what it may do."""

    digest: bytes
    grant: Grant


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class _Key(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    sha256: str
    event_types: list[str] | None = Field(default=None, min_length=1)
    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_REQUESTS_PER_MINUTE)
    admin: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError("1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or digit")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if not SHA256.fullmatch(value):
            raise ValueError(SHA256_HINT)
        return value.lower()

    @field_validator("event_types", "requests_per_minute", mode="before")
    @classmethod
    def _null_is_not_absent(cls, value: object) -> object:
        # Only a value given is checked: a null written for "none" (or by a generator) would read as absent,
        # which is every type and no limit, the widest rights, while the file looked limited.
        if value is None:
            raise ValueError("null is not allowed: leave the field out for every type, or for no limit")
        return value

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(0 < len(kind) <= MAX_TYPE_CHARS for kind in value):
            # No stored event has a longer type: a key scoped to one was accepted, and saw nothing.
            raise ValueError(f"each type is 1 to {MAX_TYPE_CHARS} characters, as an event's type is")
        return value

    @model_validator(mode="after")
    def _admin_sees_every_type(self) -> _Key:
        # Erasures, replays and backups act on every type: a key limited to some would act past its limit.
        if self.admin and self.event_types is not None:
            raise ValueError("an admin key acts on every event type (erasures, replays, backups): drop event_types")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    keys: list[_Key]


def parse(raw: bytes) -> list[Entry]:
    """The keys in the file's bytes, or a KeyFileError naming the first problems."""
    if len(raw) > MAX_FILE_BYTES:
        raise KeyFileError(f"it is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    _refuse_repeated_fields(raw)
    try:
        parsed = _File.model_validate_json(raw)
    except ValidationError as exc:
        raise KeyFileError(_explain(exc)) from None
    names: set[str] = set()
    hashes: dict[str, str] = {}
    entries = []
    for key in parsed.keys:
        if key.name in names:
            raise KeyFileError(f"two keys are named {key.name!r}")
        if key.sha256 in hashes:
            raise KeyFileError(f"{hashes[key.sha256]!r} and {key.name!r} have the same sha256: one key, two names")
        names.add(key.name)
        hashes[key.sha256] = key.name
        types = None if key.event_types is None else tuple(sorted(set(key.event_types)))
        grant = Grant(key.name, types, key.requests_per_minute, key.admin)
        entries.append(Entry(bytes.fromhex(key.sha256), grant))
    return entries


def _refuse_repeated_fields(raw: bytes) -> None:
    """A field given twice in one object: JSON parsers keep the last, so `"admin": false, "admin": true`
    made an admin of a key that reads as none, and a second `event_types` widened what it sees."""

    def once(pairs: list[tuple[str, object]]) -> dict[str, object]:
        seen: set[str] = set()
        for name, _value in pairs:
            if name in seen:
                shown = (
                    f"the field {name}" if FIELD.fullmatch(name) else "a field (its name not shown: it may be a key)"
                )
                raise KeyFileError(f"{shown} is given twice in one object: give each field once")
            seen.add(name)
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=once)
    except KeyFileError:
        raise
    except (ValueError, RecursionError):
        # No JSON, or nested past Python's stack: model_validate_json says where, in the words every
        # other problem is given in (a RecursionError here was a 500, then the file taken for read).
        pass


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        loc, message = list(error["loc"]), error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            fields = "name, sha256, event_types, requests_per_minute, admin" if len(loc) > 1 else "keys"
            message = f"unknown field (the fields are {fields})"
            # Its name is the last part of its place, written by whoever wrote the file: maybe a key.
            if not FIELD.fullmatch(str(loc[-1])):
                loc, message = loc[:-1], f"a field whose name is not shown (it may be a key): {message}"
        elif error["type"] == "too_short":
            message = "name one type at least, or leave event_types out for every type"
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        problems.append(f"{where}: {message}" if where else f"the file: {message}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
