"""The /admin/ routes that operate on stored data: dead-letter replay, and erasure by user with its audit
(api.erasure), wired on one router with the means they act through (Admin).

Each needs an admin key (api.admin) and logs what it did under the key's name,
never a user id. They write through the admin ClickHouse client
(EVENTPIPE_ADMIN_CLICKHOUSE_DSN), not the API's read-only one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from eventpipe.api import erasure
from eventpipe.api.admin import FORBIDDEN, AdminKey, admin_key
from eventpipe.api.auth import KeyCheck
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import TURN_BUSY, ApiError, responses
from eventpipe.api.param import TIME_HELP, LetterReason, instant, only_known, text
from eventpipe.ingest.replay import MAX_EXAMINED, MAX_FAILURES_SHOWN, Replayer
from eventpipe.store.audit import Audit
from eventpipe.store.backup import Backups
from eventpipe.store.erasure import Eraser
from eventpipe.store.outcome import Selection
from eventpipe.store.turn import Turn

log = logging.getLogger(__name__)
MAX_IDS = 1000


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

    erasure.routes(api, admin, cursors)
    return api
