"""The secrets `eventpipe up` keeps in its data dir when none is set: made on the first start, the same after.

Each outlives a run: another session secret is another session id (the broker
would keep what it queued for the old one), another cursor secret ends every
cursor walk and feed sync in progress, another erasure secret changes the
audit's hashes.
"""

from __future__ import annotations

import secrets

from pydantic import SecretStr

from eventpipe.config import Settings
from eventpipe.stack.credential import kept_file, kept_secret

# Under the data dir, when EVENTPIPE_MQTT_SESSION_SECRET is not set.
SESSION_KEY_FILE = "mqtt-session-secret"
CURSOR_KEY_FILE = "cursor-secret"
# Under the data dir, when EVENTPIPE_ERASURE_SECRET is not set: the audit's hashes need the same key at every start.
ERASURE_KEY_FILE = "erasure-secret"


def kept_secrets(settings: Settings) -> Settings:
    """`settings` with each secret it leaves unset read from its data dir, made there (0600) on the first start."""
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
