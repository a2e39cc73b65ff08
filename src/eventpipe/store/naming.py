"""Backup names: the UTC time a backup was taken and a random suffix, made and checked here, and the
place a name gives a backup on the `backups` disk, as BACKUP, RESTORE and the Backup engine name it."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from eventpipe.errors import BackupError
from eventpipe.store.client import BACKUP_DISK

# A UTC time to the second and a random suffix: sorts by age, never collides,
# and is safe in a path and in SQL. Anything else is refused before use.
NAME = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
NAME_TIME = "%Y%m%dT%H%M%SZ"
EXAMPLE_NAME = "20260501T030000Z-1a2b3c"


def check_name(name: str) -> str:
    """`name` if it is a backup name; anything else (a path, a quote) is refused here."""
    if not NAME.fullmatch(name):
        raise BackupError(f"{name[:80]!r} is not a backup name: they look like {EXAMPLE_NAME}")
    return name


def taken_ms(name: str) -> int:
    """When the backup `name` was taken, to the second its name gives (UTC)."""
    taken = datetime.strptime(check_name(name)[:16], NAME_TIME).replace(tzinfo=UTC)
    return int(taken.timestamp()) * 1000


def new_name(now_ms: int) -> str:
    return f"{datetime.fromtimestamp(now_ms / 1000, UTC).strftime(NAME_TIME)}-{secrets.token_hex(3)}"


def on_disk(name: str) -> str:
    return f"Disk({literal(BACKUP_DISK)}, {literal(check_name(name))})"


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
