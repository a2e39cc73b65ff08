"""The secrets and the API key `eventpipe up` makes when none is set, kept in its data dir for the next start.

A restart must not revoke the key a partner was given, nor change a secret
that outlives a run: each is written once, readable by its owner only (0600),
and read back on every start after.
"""

from __future__ import annotations

import logging
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from eventpipe.broker.session import kept_file, kept_secret
from eventpipe.config import Settings
from eventpipe.errors import ConfigError

log = logging.getLogger("eventpipe")
FILE_NAME = "api-key"
# Under the data dir, when EVENTPIPE_MQTT_SESSION_SECRET is not set.
SESSION_KEY_FILE = "mqtt-session-secret"
CURSOR_KEY_FILE = "cursor-secret"
# Under the data dir, when EVENTPIPE_ERASURE_SECRET is not set: the audit's hashes need the same key at every start.
ERASURE_KEY_FILE = "erasure-secret"


def kept_secrets(settings: Settings) -> Settings:
    """`settings` with each secret it leaves unset read from the data dir, made there on the first start."""
    if settings.mqtt_session_secret is None:
        # Kept beside the broker's persistence: the session and the secret that names it live and go together.
        secret = kept_secret(settings.data_dir / SESSION_KEY_FILE)
        settings = settings.model_copy(update={"mqtt_session_secret": SecretStr(secret)})
    if settings.cursor_secret is None:
        # Kept too, so a restart does not end every cursor walk and feed sync in progress with a 422.
        cursor_secret = kept_file(settings.data_dir / CURSOR_KEY_FILE, secrets.token_hex(32))
        settings = settings.model_copy(update={"cursor_secret": SecretStr(cursor_secret)})
    if settings.erasure_secret is None:
        secret = kept_secret(settings.data_dir / ERASURE_KEY_FILE)
        settings = settings.model_copy(update={"erasure_secret": SecretStr(secret)})
    return settings


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
