"""The /admin/ routes of erasure by user: one user (`POST /admin/erase`), many at once (`POST
/admin/erasures`), and the erasure audit (`GET /admin/erasures`).

Each needs an admin key and logs under the key's name, never a user id: one user's erasure the start
of its keyed hash, many users' the number of users and the totals, in one line at the start and one at
the end (api.maintenance wires them beside the dead-letter replay, on the admin ClickHouse client).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from eventpipe.api.admin import AdminKey
from eventpipe.api.body import MAX_BODY_BYTES
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import TURN_TAKEN, ApiError, responses
from eventpipe.api.model import rfc3339
from eventpipe.api.param import Cursor, Limit, text
from eventpipe.store.audit import Erasure, user_hash
from eventpipe.store.erasure import AT_ONCE
from eventpipe.store.erasure import Erased as StoreErased

if TYPE_CHECKING:
    from eventpipe.api.maintenance import Admin

log = logging.getLogger("eventpipe.api.maintenance")
# What a user id may be, as the schema says it: a client generated from it sent only strings. An integer is
# bounded as its decimal text is (256 characters, a minus sign counted), which the schema did not say. Said in
# words: FastAPI's document keeps `maximum` as a float, and 1e+256 cannot say where 256 digits end.
USER_ID_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 256},
        {
            "type": "integer",
            "description": "At most 256 digits (255 with a minus sign): taken as its decimal text, "
            "which is at most 256 characters as a string id is.",
        },
    ]
}


def _as_stored(value: object) -> object:
    # An event's integer user_id is stored as its decimal text (events.contract): the same here.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        # Said as the schema says it: pydantic's "a valid string" hid that an integer is taken too.
        raise PydanticCustomError("string_or_integer", "Input should be a string or an integer")
    return value


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user_id": "user-1042"}]})

    # The schema says what the validator takes: a client generated from it sent only strings.
    user_id: Annotated[
        str,
        BeforeValidator(_as_stored),
        WithJsonSchema(USER_ID_SCHEMA),
    ] = Field(
        min_length=1,
        max_length=256,
        description="The user whose data goes: a string of 256 characters at most, or an integer as events may "
        'carry it (`42` is `"42"`) of 256 digits at most (255 with a minus sign).',
    )


class Erased(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{"events": 812, "dead_letters": 2, "complete": True}]}}

    events: int = Field(description="The user's events deleted, each counted once.")
    dead_letters: int = Field(description="Dead letters deleted because their payload names the user id.")
    complete: bool = Field(
        description="False when a worker had not reported committing what it received before the erasure "
        "(one stopped without retiring, or one retrying a slow store), or a dead-letter replay in another API "
        "process had not ended within a minute: a batch or a replay may store some of the user's events after "
        "the answer. Erase again once every worker is back and the replay has ended."
    )


# Constrained as a string once made one: constrained outside, pydantic said "at most 256 items".
UserId = Annotated[Annotated[str, StringConstraints(min_length=1, max_length=256)], BeforeValidator(_as_stored)]


class EraseManyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_ids": ["user-1042", "user-2077", 913297552]}]}
    )

    user_ids: list[Annotated[UserId, WithJsonSchema(USER_ID_SCHEMA)]] = Field(
        min_length=1,
        max_length=AT_ONCE,
        description=f"The users whose data goes, {AT_ONCE:,} at most, each once: strings of 256 characters at "
        "most, or integers as events may carry them, of 256 digits at most (255 with a minus sign). Erased in the "
        "same deletes, so many users cost about what one does. The body is bounded "
        f"as every body is ({MAX_BODY_BYTES // 1024} KiB): 1,000 ids of about 120 characters at most.",
    )

    @model_validator(mode="after")
    def _each_once(self) -> EraseManyRequest:
        seen: set[str] = set()
        for user_id in self.user_ids:
            if user_id in seen:
                # `42` and `"42"` are one user: said, not erased twice in one call.
                raise PydanticCustomError("duplicate_user", "user_ids holds {user} twice", {"user": repr(user_id)})
            seen.add(user_id)
        return self


class ErasedUser(Erased):
    model_config = {
        "json_schema_extra": {
            "examples": [{"user_id": "user-1042", "events": 812, "dead_letters": 2, "complete": True}]
        }
    }

    user_id: str = Field(description="The user, as stored (an integer as its decimal text).")


class ErasedMany(BaseModel):
    items: list[ErasedUser] = Field(
        description="Each user asked for, in the order asked. An event or a dead letter that names several of "
        "them is counted once, against the first."
    )


class ErasureRecord(BaseModel):
    erasure_id: str
    erased_at: str
    key_name: str = Field(description="The name of the admin key that asked for it.", examples=["operator"])
    user_hash: str = Field(description="HMAC-SHA256 of the user id under EVENTPIPE_ERASURE_SECRET, hex.")
    events: int
    dead_letters: int
    complete: bool = Field(
        description="False when the erasure answered `complete: false` (erase that user again); "
        "true for erasures recorded before eventpipe kept this."
    )


class ErasurePage(BaseModel):
    items: list[ErasureRecord]
    next_cursor: str | None


# A route's own 503 entry replaces the router's: the generic one (model, Retry-After) with what the route adds.
ERASE_UNAVAILABLE = {
    **responses(503)[503],
    "description": "ClickHouse cannot answer now (`unavailable`), or a migration is copying a table the erasure "
    "must reach or swapped one during it, or the API answers as many requests as it does at once, or "
    f"{TURN_TAKEN} (`busy`): for all three, erase again after `Retry-After` seconds. Or erasure "
    "is not set up (`not_configured`: EVENTPIPE_ERASURE_SECRET is empty).",
}
AUDIT_UNAVAILABLE = {
    **responses(503)[503],
    "description": "ClickHouse cannot answer now (`unavailable`), or the API answers as many requests as it does "
    "at once (`busy`): retry after `Retry-After` seconds. Or finding a "
    "user's erasures is not set up (`not_configured`: EVENTPIPE_ERASURE_SECRET is empty).",
}
AuditedUser = Annotated[
    str | None,
    Query(max_length=256, description="Only the erasures of this user (found by its hash).", examples=["user-1042"]),
]


def routes(api: APIRouter, admin: Admin, cursors: Cursors) -> None:
    """Add the erasure routes to the admin router `api`."""

    @api.post(
        "/erase",
        summary="Delete a user's events and the dead letters that name them",
        responses={503: ERASE_UNAVAILABLE},
    )
    def erase(key: AdminKey, body: EraseRequest) -> Erased:
        (erased,) = _erase(admin, key, [body.user_id], _logged_by_user)
        return Erased(events=erased.events, dead_letters=erased.dead_letters, complete=erased.complete)

    @api.post(
        "/erasures",
        summary="Delete the events of many users and the dead letters that name them, in one erasure",
        responses={503: ERASE_UNAVAILABLE},
    )
    def erase_many(key: AdminKey, body: EraseManyRequest) -> ErasedMany:
        erased = _erase(admin, key, body.user_ids, _logged_as_one)
        return ErasedMany(
            items=[
                ErasedUser(user_id=user_id, events=one.events, dead_letters=one.dead_letters, complete=one.complete)
                for user_id, one in zip(body.user_ids, erased, strict=True)
            ]
        )

    @api.get(
        "/erasures",
        summary="The erasure audit, newest first",
        responses={503: AUDIT_UNAVAILABLE},
    )
    def erasures(key: AdminKey, user_id: AuditedUser = None, limit: Limit = 100, cursor: Cursor = None) -> ErasurePage:
        wanted = None
        if text(user_id) is not None:
            if admin.erasure_secret is None:
                raise ApiError(503, "not_configured", "finding a user's erasures needs EVENTPIPE_ERASURE_SECRET")
            wanted = user_hash(str(user_id), admin.erasure_secret)
        query_scope = cursors.scope("erasures", wanted)
        after = cursors.decode(cursor, query_scope) if cursor else None
        found, resume = admin.audit.records(wanted, limit, after)
        log.info("erasure audit read by key %r%s", key, " for one user" if wanted else "")
        return ErasurePage(
            items=[
                ErasureRecord(
                    erasure_id=record.erasure_id,
                    erased_at=rfc3339(record.erased_ms),
                    key_name=record.key_name,
                    user_hash=record.user_hash,
                    events=record.events,
                    dead_letters=record.dead_letters,
                    complete=record.complete,
                )
                for record in found
            ],
            next_cursor=cursors.encode(resume, query_scope) if resume else None,
        )


# Called once before the deletes (with no records) and once after them, before the audit is written.
Logged = Callable[[str, list[str], list[Erasure] | None], None]


def _erase(admin: Admin, key: str, user_ids: list[str], logged: Logged) -> list[StoreErased]:
    """Erase `user_ids` in one erasure (store.erasure.Eraser.erase_all) and record each in the audit."""
    if admin.erasure_secret is None:
        raise ApiError(503, "not_configured", "erasure needs EVENTPIPE_ERASURE_SECRET (32+ random characters)")
    digests = [user_hash(user_id, admin.erasure_secret) for user_id in user_ids]
    with admin.writing.taken("an erasure"):
        # A start without its end in the log is an erasure cut short (the API stopped): to be called again.
        # Logged once its turn has come: one refused for want of it did nothing.
        logged(key, digests, None)
        erased = admin.eraser.erase_all(user_ids)
        erased_ms = time.time_ns() // 1_000_000
        records = [
            Erasure(str(uuid.uuid4()), erased_ms, key, digest, *one)
            for digest, one in zip(digests, erased, strict=True)
        ]
        # Logged before the audit records are written: if writing them fails, the log still says what was erased.
        logged(key, digests, records)
        admin.audit.record_all(records)
    return erased


INCOMPLETE = "incomplete (a worker or a replay had not settled): erase again"


def _logged_by_user(key: str, digests: list[str], records: list[Erasure] | None) -> None:
    # One user: its hash's start, so its line matches its audit record (the id itself is personal data).
    if records is None:
        for digest in digests:
            log.info("erasure started by key %r: user hash %s...", key, digest[:12])
        return
    for record in records:
        log.info(
            "erasure %s by key %r: user hash %s..., %d events, %d dead letters%s",
            record.erasure_id,
            key,
            record.user_hash[:12],
            record.events,
            record.dead_letters,
            "" if record.complete else f"; {INCOMPLETE}",
        )


def _logged_as_one(key: str, digests: list[str], records: list[Erasure] | None) -> None:
    # Many users: two lines a call, not two a user (1,000 users logged 2,000 lines). No id, no hash: the
    # audit holds each user's hash and counts, and the caller has the list to call again with.
    users = f"{len(digests):,} user{'' if len(digests) == 1 else 's'}"
    if records is None:
        log.info("erasure of %s started by key %r", users, key)
        return
    # Its records' erased_at, which finds them in the audit (GET /admin/erasures).
    log.info(
        "erasure of %s by key %r, erased_at %s: %d events, %d dead letters, %s",
        users,
        key,
        rfc3339(records[0].erased_ms) if records else "-",
        sum(record.events for record in records),
        sum(record.dead_letters for record in records),
        "complete" if all(record.complete for record in records) else INCOMPLETE,
    )
