"""The secrets `eventpipe up` keeps in its data dir when none is set: made on the first start, the same after.

Each outlives a run: another session secret is another session id (the broker
would keep what it queued for the old one), another cursor secret ends every
cursor walk and feed sync in progress, another erasure secret changes the
audit's hashes.
"""

from __future__ import annotations

from pydantic import SecretStr

from eventpipe.config import Settings
from eventpipe.stack.credential import kept_secret

# Under the data dir, when EVENTPIPE_MQTT_SESSION_SECRET is not set.
SESSION_KEY_FILE = "mqtt-session-secret"
CURSOR_KEY_FILE = "cursor-secret"
# Under the data dir, when EVENTPIPE_ERASURE_SECRET is not set: the audit's hashes need the same key at every start.
ERASURE_KEY_FILE = "erasure-secret"


# Each secret `eventpipe up` keeps when it is not set, and its file under the data dir. The session
# secret lives beside the broker's persistence: the session and the secret that names it go together.
# The cursor secret is kept so a restart does not end every cursor walk and feed sync with a 422.
KEPT = (
    ("mqtt_session_secret", SESSION_KEY_FILE),
    ("cursor_secret", CURSOR_KEY_FILE),
    ("erasure_secret", ERASURE_KEY_FILE),
)


def kept_secrets(settings: Settings) -> Settings:
    """`settings` with each secret it leaves unset read from its data dir, made there (0600) on the first start."""
    for field, name in KEPT:
        if getattr(settings, field) is None:
            secret = SecretStr(kept_secret(settings.data_dir / name))
            settings = settings.model_copy(update={field: secret})
    return settings
