"""The backup routes under /admin/: take a backup while ingest runs, list the backups. Admin keys only."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from eventpipe.api.admin import FORBIDDEN, AdminKey, admin_key
from eventpipe.api.auth import KeyCheck
from eventpipe.api.cursor import Cursors
from eventpipe.api.error import KEYED, TURN_BUSY, ApiError, responses
from eventpipe.api.model import rfc3339
from eventpipe.api.param import Cursor, Whole, only_known
from eventpipe.errors import BackupError
from eventpipe.redaction import redact
from eventpipe.store.backup import Backups
from eventpipe.store.catalog import Backup as StoredBackup
from eventpipe.store.naming import EXAMPLE_NAME

# The backup's own failure has a code of its own, with ClickHouse's reason (redacted) in `detail`.
BACKUP_FAILED = {
    500: "The backup failed (`backup_failed`: `detail` gives ClickHouse's reason, such as a full or missing "
    "backups disk), or ClickHouse refused a query (`storage_error`); the operator must look."
}

log = logging.getLogger(__name__)


class Backup(BaseModel):
    name: str = Field(
        description="Its name, to give to `eventpipe restore --backup NAME`: the UTC time it was taken and a "
        "random suffix. Native: `<data dir>/backups/NAME`; compose: the `clickhouse-backups` volume.",
        examples=[EXAMPLE_NAME],
    )
    taken_at: str = Field(description="When it was taken (RFC 3339, UTC).", examples=["2026-05-01T03:00:00.412Z"])
    events: int = Field(
        description="Events it holds, as reads count them (each once, probes left out): what a restore brings back.",
        examples=[1250000],
    )
    dead_letters: int = Field(description="Dead letters it holds.", examples=[37])
    bytes: int = Field(description="Its size on the backups disk.", examples=[73400320])

    @classmethod
    def of(cls, stored: StoredBackup) -> Backup:
        return cls(
            name=stored.name,
            taken_at=rfc3339(stored.taken_ms),
            events=stored.events,
            dead_letters=stored.dead_letters,
            bytes=stored.bytes,
        )


# Each backup listed is opened on the disk (store.attachment.present) while backups, erasures and replays wait
# (store.turn): a page is a tenth of other lists'.
MAX_LISTED = 100
BackupLimit = Annotated[int, Query(ge=1, le=MAX_LISTED, description=f"Backups per page, 1 to {MAX_LISTED}."), Whole]


class BackupList(BaseModel):
    items: list[Backup] = Field(
        description="Newest first; a backup removed from the disk is not listed, so a page may hold fewer than `limit`."
    )
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


def router(backups: Backups, keys: KeyCheck, cursors: Cursors) -> APIRouter:
    api = APIRouter(
        prefix="/admin",
        tags=["admin"],
        # The admin check before the parameters': a key that is no admin key learns nothing more than 403
        # (it got 422 naming the parameters, and was counted as a client error, not a refusal).
        dependencies=[Depends(keys), Depends(admin_key), Depends(only_known)],
        responses={**responses(*KEYED), **FORBIDDEN},
    )

    @api.post(
        "/backups",
        summary="Take a backup now, while ingest goes on",
        description="ClickHouse's own BACKUP of every table, read back to count what it holds. "
        "Takes as long as copying the store takes; one at a time per API process.",
        responses=responses(500, 503, say={**BACKUP_FAILED, 503: TURN_BUSY}),
    )
    def take(key: AdminKey) -> Backup:
        try:
            taken = backups.take(key)
        except BackupError as exc:
            # The reason (no room on the disk, a missing disk in ClickHouse's config) is for the admin key's
            # holder, the operator or their cron job, as much as for the log.
            log.error("admin %s: backup failed: %s", key, exc)
            raise ApiError(500, "backup_failed", f"the backup failed: {redact(str(exc))[:1000]}") from exc
        log.info(
            "admin %s: took backup %s (%d events, %d dead letters, %d bytes)",
            key,
            taken.name,
            taken.events,
            taken.dead_letters,
            taken.bytes,
        )
        return Backup.of(taken)

    @api.get(
        "/backups",
        summary="The backups that can be restored, newest first, one page at a time",
        responses=responses(503, say={503: TURN_BUSY}),
    )
    def listing(key: AdminKey, limit: BackupLimit = MAX_LISTED, cursor: Cursor = None) -> BackupList:
        query_scope = cursors.scope("backups")
        after = cursors.decode(cursor, query_scope) if cursor else None
        found, resume = backups.page(limit, after)
        log.info("admin %s: listed %d backups", key, len(found))
        return BackupList(
            items=[Backup.of(backup) for backup in found],
            next_cursor=cursors.encode(resume, query_scope) if resume else None,
        )

    return api
