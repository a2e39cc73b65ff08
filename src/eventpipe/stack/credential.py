"""The API key `eventpipe up` generates when none is set, kept in its data dir for the next start.

A restart must not revoke the key a partner was given: the key is written
once, readable by its owner only (0600), and read back on every start after.
"""

from __future__ import annotations

import logging
import secrets
import stat
from pathlib import Path

from eventpipe.broker.session import kept_file
from eventpipe.errors import ConfigError

log = logging.getLogger("eventpipe")
FILE_NAME = "api-key"


def generated_key(data_dir: Path) -> tuple[str, bool]:
    """The key kept in `data_dir`, made now if there is none; and whether it was made now."""
    path = data_dir / FILE_NAME
    made = not path.exists()
    if made:
        # Whole or absent, even after a crash mid-write, and never readable by others.
        kept_file(path, secrets.token_urlsafe(24))
    return _read(path), made


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Others could read it: close that, and say so, since they may have.
        path.chmod(0o600)
        log.warning("%s was readable by other users (mode %o): now 0600", path, mode)
    key = path.read_text().strip()
    if not key or any(char.isspace() for char in key):
        raise ConfigError(f"{path} does not hold one API key: delete it to have a new one generated")
    return key
