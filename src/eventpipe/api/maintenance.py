"""The /admin/ routes that operate on stored data: dead-letter replay, erasure by user, the erasure audit.

Each needs an admin key (api.admin) and logs what it did under the key's name,
never a user id. They write through the admin ClickHouse client
(EVENTPIPE_ADMIN_CLICKHOUSE_DSN), not the API's read-only one.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from eventpipe.api.admin import FORBIDDEN, AdminKey, admin_key
from eventpipe.api.auth import KeyCheck
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import TURN_BUSY, TURN_TAKEN, ApiError, responses
from eventpipe.api.model import rfc3339
from eventpipe.api.param import TIME_HELP, Cursor, LetterReason, Limit, instant, only_known, text
from eventpipe.config import Settings
from eventpipe.ingest.limit import limits_from
from eventpipe.ingest.replay import MAX_EXAMINED, MAX_FAILURES_SHOWN, Replayer
from eventpipe.store.audit import Audit, Erasure, user_hash
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.dsn import embedded
from eventpipe.store.erasure import Eraser
from eventpipe.store.outcome import Outcomes, Selection
from eventpipe.store.turn import Turn
from eventpipe.store.writer import Writer

log = logging.getLogger(__name__)
MAX_IDS = 1000
ERASE_TIMEOUT_S = 900


@dataclass(frozen=True)
class Admin:
    """What the admin routes act through: a replayer, an eraser and the audit on the admin client, and the audit's
    hash key."""

    replayer: Replayer
    eraser: Eraser
    audit: Audit
    # Keys the audit's hashes of user ids; None: erasure answers 503 until it is set.
    erasure_secret: str | None
    # One write at a time, each waited for only so long (store.turn).
    writing: Turn = field(default_factory=Turn)

    def backups(self, client: Client) -> Backups:
        """Backups through `client` that take turns with erasures and replays: a backup taken beside an
        erasure could copy the rows it masks."""
        return Backups(client, self.writing)


def admin(settings: Settings) -> Admin:
    """The admin routes' means, writing as EVENTPIPE_ADMIN_CLICKHOUSE_DSN's user, parsing under the
    limits the settings give (as the worker does with the same settings)."""
    # An erasure waits for deletes that rewrite each part's row mask: seconds per 10M events stored.
    client = connect(settings.resolved_admin_clickhouse_dsn, timeout_s=ERASE_TIMEOUT_S)
    secret = settings.erasure_secret.get_secret_value() if settings.erasure_secret else None
    eraser = Eraser(client, embedded=embedded(settings.resolved_admin_clickhouse_dsn))
    return Admin(Replayer(Outcomes(client), Writer(client), limits_from(settings)), eraser, Audit(client), secret)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "invalid_timestamp", "since": "2026-11-22T00:00:00Z"}]},
    )

    reason: LetterReason = Field(None, max_length=64, description="Only letters of this reason.")
    since: str | None = Field(None, max_length=64, description=f"Only letters received from then on: {TIME_HELP}.")
    until: str | None = Field(None, max_length=64, description=f"Only letters received before then: {TIME_HELP}.")
    ids: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None,
        max_length=MAX_IDS,
        description="Only these letters (`dead_letter_id`), failed ones included even under unchanged settings.",
    )


class ReplayFailure(BaseModel):
    dead_letter_id: str
    reason: str = Field(description="Why it still fails: a dead-letter reason, or `cut`.", examples=["cut"])
    detail: str


class Replayed(BaseModel):
    model_config = {
        "json_schema_extra": {
            "examples": [
                {"examined": 120, "stored": 117, "still_failing": 3, "remaining": 0, "failures": [], "unknown": []}
            ]
        }
    }

    examined: int = Field(description=f"Letters parsed again by this call, at most {MAX_EXAMINED:,}.")
    stored: int = Field(description="Of those, the ones that pass now and were stored as events.")
    still_failing: int = Field(description="Of those, the ones that still fail; each is marked `failed`.")
    remaining: int = Field(description="Letters of the selection still due: call again while above 0.")
    failures: list[ReplayFailure] = Field(
        description=f"The first {MAX_FAILURES_SHOWN} that still fail, with why. A payload cut at the size limit "
        "when it was received (`cut`) can never be replayed."
    )
    unknown: list[str] = Field(
        default_factory=list,
        description="Of the `ids` asked for, those no dead letter has (mistyped, or erased), sorted. A known id "
        "not examined was replayed before, or is outside `reason`, `since` or `until`.",
    )


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
        WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": 256}, {"type": "integer"}]}),
    ] = Field(
        min_length=1,
        max_length=256,
        description='The user whose data goes: a string, or an integer as events may carry it (`42` is `"42"`).',
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
ErasedUser = Annotated[
    str | None,
    Query(max_length=256, description="Only the erasures of this user (found by its hash).", examples=["user-1042"]),
]


def router(admin: Admin, keys: KeyCheck, cursors: Cursors) -> APIRouter:
    api = APIRouter(
        prefix="/admin",
        tags=["admin"],
        # The admin check before the parameters': a key that is no admin key learns nothing more than 403
        # (it got 422 naming the parameters, and was counted as a client error, not a refusal).
        dependencies=[Depends(keys), Depends(admin_key), Depends(only_known)],
        responses={**responses(400, 401, 413, 422, 429, 500, 503), **FORBIDDEN},
    )

    @api.post(
        "/dead-letters/replay",
        summary="Parse pending dead letters again and store those that pass now",
        responses=responses(503, say={503: TURN_BUSY}),
    )
    def replay(key: AdminKey, body: Annotated[ReplayRequest | None, Body()] = None) -> Replayed:
        asked = body or ReplayRequest.model_validate({})
        since_ms, until_ms = instant("since", asked.since), instant("until", asked.until)
        if since_ms is not None and until_ms is not None and since_ms >= until_ms:
            raise ApiError(422, "invalid_parameter", "since must be before until")
        ids = tuple(asked.ids) if asked.ids is not None else None
        with admin.writing.taken("a dead-letter replay"):
            report = admin.replayer.replay(Selection(text(asked.reason), since_ms, until_ms, ids))
        log.info(
            "dead-letter replay by key %r: %d examined, %d stored, %d still failing, %d remaining",
            key,
            report.examined,
            report.stored,
            report.still_failing,
            report.remaining,
        )
        return Replayed(
            examined=report.examined,
            stored=report.stored,
            still_failing=report.still_failing,
            remaining=report.remaining,
            failures=[ReplayFailure(**vars(failure)) for failure in report.failures],
            unknown=report.unknown,
        )

    @api.post(
        "/erase",
        summary="Delete a user's events and the dead letters that name them",
        responses={503: ERASE_UNAVAILABLE},
    )
    def erase(key: AdminKey, body: EraseRequest) -> Erased:
        if admin.erasure_secret is None:
            raise ApiError(503, "not_configured", "erasure needs EVENTPIPE_ERASURE_SECRET (32+ random characters)")
        digest = user_hash(body.user_id, admin.erasure_secret)
        with admin.writing.taken("an erasure"):
            # A start without its end in the log is an erasure cut short (the API stopped): to be called again.
            # Logged once its turn has come: one refused for want of it did nothing.
            log.info("erasure started by key %r: user hash %s...", key, digest[:12])
            erased = admin.eraser.erase(body.user_id)
            erasure_id, erased_ms = str(uuid.uuid4()), time.time_ns() // 1_000_000
            # Logged before the audit record is written: if writing it fails, the log still says what was erased.
            log.info(
                "erasure %s by key %r: user hash %s..., %d events, %d dead letters%s",
                erasure_id,
                key,
                digest[:12],
                erased.events,
                erased.dead_letters,
                "" if erased.complete else "; incomplete (a worker or a replay had not settled): erase again",
            )
            admin.audit.record(
                Erasure(erasure_id, erased_ms, key, digest, erased.events, erased.dead_letters, erased.complete)
            )
        return Erased(events=erased.events, dead_letters=erased.dead_letters, complete=erased.complete)

    @api.get(
        "/erasures",
        summary="The erasure audit, newest first",
        responses={503: AUDIT_UNAVAILABLE},
    )
    def erasures(key: AdminKey, user_id: ErasedUser = None, limit: Limit = 100, cursor: Cursor = None) -> ErasurePage:
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

    return api
