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
from typing import NamedTuple

MIN_SECRET_CHARS = 32
# 32 hex digits: 128 bits, far beyond guessing, short enough for a log line.
DIGEST_HEX = 32


def share_group(name: str, secret: str) -> str:
    """The shared subscription's group: `name` plus what only the secret's holders can compute.

    Any client may subscribe to `$share/<group>/...` (Mosquitto's ACL cannot refuse a subscription),
    and the broker hands each message to one member of the group: one a producer's ACL forbids it
    to deliver to, which Mosquitto then drops for the whole group. A producer subscribed to the plain
    group (or left a session there) lost every other acknowledged event without a trace.
    Keyed apart from the session ids, so neither can be computed from the other."""
    return _signed(name, f"$share/{name}", secret)


def session_id(name: str, secret: str) -> str:
    """`name` (readable in the broker's log) followed by what only the secret's holders can compute."""
    return _signed(name, name, secret)


def _signed(name: str, message: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()[:DIGEST_HEX]
    return f"{name}-{digest}"


class Subscription(NamedTuple):
    """The worker's topic filter: as it subscribes (`name`), as logs and errors show it (`shown`: the
    group's HMAC would let a reader of the log join it), and the plain group that versions before the
    HMAC subscribed to, which a resumed session may still hold (`plain`, None when there is none)."""

    name: str
    shown: str
    plain: str | None


def subscription(topic: str, group: str, secret: str | None) -> Subscription:
    """`topic`, shared in `group` when one is given: a name only holders of `secret` can join, or
    the group itself without a secret (tests, benchmarks: as guessable as the session id then)."""
    if not group:
        return Subscription(topic, topic, None)
    if secret is None:
        return Subscription(f"$share/{group}/{topic}", f"$share/{group}/{topic}", None)
    signed = share_group(group, secret)
    return Subscription(f"$share/{signed}/{topic}", f"$share/{group}-<hmac>/{topic}", f"$share/{group}/{topic}")
