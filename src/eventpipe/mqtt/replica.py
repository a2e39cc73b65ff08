"""The worker's name in a compose replica: its container's name, as the resolver gives it for its own address.

The worker's name (EVENTPIPE_MQTT_CLIENT_ID), from which the id of its broker
session derives, must differ between the replicas of `docker compose up
--scale ingest-worker=N` and stay the same when one replica is restarted or
re-created (a new image, a changed setting). A replica's container name
(eventpipe-ingest-worker-2) has both properties, and Docker's DNS gives it for
a reverse lookup of the container's address. A random or hostname-based id
would instead leave a session behind at every re-creation, and Mosquitto keeps
handing such a session its share of the shared subscription until it expires.

Docker's /etc/hosts maps the container's address to its hostname (the
container id, new at every re-creation), and the resolver reads that file
first unless told otherwise: the worker image asks DNS first (ingest-worker/Dockerfile). An
answer that is the hostname is refused, so a resolver that read /etc/hosts
after all stops the worker instead of stranding sessions.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket

from eventpipe.config import Settings
from eventpipe.errors import ConfigError

log = logging.getLogger(__name__)

CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def replica_name(address: str | None = None, hostname: str | None = None) -> str:
    """The first label of the name the resolver gives `address` (default: this host's), e.g.
    eventpipe-ingest-worker-2 of eventpipe-ingest-worker-2.eventpipe_default."""
    hostname = hostname or socket.gethostname()
    try:
        address = address or socket.gethostbyname(hostname)
        name = socket.gethostbyaddr(address)[0]
    except OSError as exc:
        raise LookupError(f"no name for {address or hostname} in a reverse lookup: {exc}") from None
    label = name.split(".", 1)[0]
    if label == hostname.split(".", 1)[0]:
        raise LookupError(f"the reverse lookup of {address} gave this host's own hostname {label!r} (from /etc/hosts)")
    if ipaddress.ip_address(address).is_loopback or label == "localhost":
        # Every worker on the host would get it, and take each other's session: not a replica's name.
        raise LookupError(f"the reverse lookup of {address} gave {name!r}, this host's loopback name")
    if not CLIENT_ID.fullmatch(label):
        raise LookupError(f"the reverse lookup of {address} gave {name!r}, no usable name")
    return label


def named(settings: Settings, address: str | None = None, hostname: str | None = None) -> Settings:
    """`settings` with the replica's name as the worker's, when EVENTPIPE_MQTT_CLIENT_ID_FROM_DNS asks for it
    and EVENTPIPE_MQTT_CLIENT_ID is not set (an explicit name is used as it is: one replica only)."""
    if not settings.mqtt_client_id_from_dns or "mqtt_client_id" in settings.model_fields_set:
        return settings
    try:
        name = replica_name(address, hostname)
    except LookupError as exc:
        raise ConfigError(
            f"{exc}. Without a stable per-replica name the worker's broker session would be lost at every "
            "re-creation; set EVENTPIPE_MQTT_CLIENT_ID (one distinct value per replica) instead"
        ) from None
    log.info("MQTT client id %s, the replica's name in DNS", name)
    return settings.model_copy(update={"mqtt_client_id": name})
