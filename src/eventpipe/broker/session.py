"""The worker's MQTT session id: its name plus an HMAC of the name under a secret that producers never hold.

Mosquitto hands a persistent session to any client that presents its client
id, whatever user it authenticated as (MQTT 5 section 5.4.2 leaves that check
to the broker, and Mosquitto 2.0 makes none). A client that took the worker's
session ended its subscription (clean start) or received what was queued for
it (resumed), and producers still got their PUBACKs. Mosquitto 2.0 cannot bind
a client id to a user without breaking producers that share one user
(`use_username_as_clientid`), and its dynamic security plugin binds a user to
an id, not an id to a user. So the id itself is what no one else can present:
128 bits that only a holder of the secret can compute, on any broker and for
every replica of a shared subscription alike.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

MIN_SECRET_CHARS = 32
# 32 hex digits: 128 bits, far beyond guessing, short enough for a log line.
DIGEST_HEX = 32


def session_id(name: str, secret: str) -> str:
    """`name` (readable in the broker's log) followed by what only the secret's holders can compute."""
    digest = hmac.new(secret.encode(), name.encode(), hashlib.sha256).hexdigest()[:DIGEST_HEX]
    return f"{name}-{digest}"


def kept_secret(path: Path) -> str:
    """The secret stored at `path`, created (random, readable by its owner only) on first use.

    It must outlive restarts: another secret is another session id, and the
    broker would keep what it queued for the old one until that expires.
    """
    return kept_file(path, secrets.token_hex(32))


def kept_file(path: Path, fresh: str) -> str:
    """What `path` holds, stripped; on first use it is made to hold `fresh`, readable by its owner only.

    Written whole or not at all: a temporary file, synced, then linked into
    place, which fails if another process got there first (its value wins).
    A crash mid-write leaves no empty file to be taken for a secret."""
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(fresh + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()
