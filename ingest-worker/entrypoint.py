"""Entrypoint of the ingest-worker image: `worker` (the default), `migrate`, or any other eventpipe command.

worker: the worker's name (EVENTPIPE_MQTT_CLIENT_ID), from which the id of its
broker session derives (with EVENTPIPE_MQTT_SESSION_SECRET), must differ
between the replicas of `docker compose up --scale ingest-worker=N` and stay
the same when one replica is restarted or re-created (a new image, a changed
setting). A replica's container name (eventpipe-ingest-worker-2) has both
properties, and Docker's embedded DNS returns it for a reverse lookup of the
container's own address. A random or hostname-based id would instead leave a
session behind at every re-creation, and Mosquitto keeps handing such a session
its share of the shared subscription until the session expires.
An explicit EVENTPIPE_MQTT_CLIENT_ID is used as it is (one replica only).

migrate: the migrations create tables inside the DSN's database, so the
database itself is created first (the migrator user is allowed exactly that).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import sys
from urllib.parse import urlsplit, urlunsplit

DOCKER_DNS = ("127.0.0.11", 53)
PTR = 12
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split(".")) + b"\0"


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """A possibly compressed domain name at `offset`; returns it and the offset just after it."""
    labels: list[str] = []
    resume: int | None = None
    for _ in range(128):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if resume is None:
                resume = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        offset += 1
        if length == 0:
            return ".".join(labels), resume if resume is not None else offset
        labels.append(data[offset : offset + length].decode("ascii"))
        offset += length
    raise ValueError("DNS name too long or looping")


def reverse_lookup(address: str, server: tuple[str, int], timeout: float = 2.0) -> str | None:
    """The PTR name of an IPv4 address, asked of `server` directly: /etc/hosts, which
    getaddrinfo reads first, maps the container's own address to its random hostname."""
    ident = secrets.randbelow(1 << 16)
    name = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
    query = struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!2H", PTR, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, server)
        data, _ = sock.recvfrom(4096)
    reply_id, flags, questions, answers, _, _ = struct.unpack_from("!6H", data)
    if reply_id != ident or flags & 0x000F or not answers:
        return None
    offset = 12
    for _ in range(questions):
        _, offset = read_name(data, offset)
        offset += 4
    for _ in range(answers):
        _, offset = read_name(data, offset)
        rtype, _rclass, _ttl, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if rtype == PTR:
            return read_name(data, offset)[0]
        offset += length
    return None


def replica_client_id(server: tuple[str, int] | None = None) -> str:
    """The container's compose name (the first label of its PTR name), e.g. eventpipe-ingest-worker-2."""
    server = server or DOCKER_DNS
    address = socket.gethostbyname(socket.gethostname())
    name = reverse_lookup(address, server)
    label = name.split(".", 1)[0] if name else ""
    if not CLIENT_ID.fullmatch(label):
        raise LookupError(f"no usable name for {address} in {server[0]}'s reverse lookup (got {name!r})")
    return label


def create_database(dsn: str) -> None:
    """CREATE DATABASE IF NOT EXISTS for the database named in an http(s) DSN's path."""
    parts = urlsplit(dsn)
    database = parts.path.strip("/")
    if parts.scheme not in ("http", "https") or not database:
        return
    if not DATABASE_NAME.fullmatch(database):
        raise ValueError(f"database name {database!r} in EVENTPIPE_CLICKHOUSE_DSN: use letters, digits and '_'")
    from eventpipe.store.client import connect

    client = connect(urlunsplit(parts._replace(path="")))
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.close()


def main(argv: list[str]) -> int:
    args = argv or ["worker"]
    if args[0] == "worker" and not os.environ.get("EVENTPIPE_MQTT_CLIENT_ID"):
        try:
            client_id = replica_client_id()
        except (OSError, LookupError, ValueError) as exc:
            print(
                f"entrypoint: {exc}. Without a stable per-replica name the worker's broker session would be lost "
                "at every re-creation; set EVENTPIPE_MQTT_CLIENT_ID (one distinct value per replica) instead.",
                file=sys.stderr,
            )
            return 2
        os.environ["EVENTPIPE_MQTT_CLIENT_ID"] = client_id
        print(f"entrypoint: MQTT client id {client_id}", file=sys.stderr, flush=True)
    elif args[0] == "migrate":
        try:
            create_database(os.environ.get("EVENTPIPE_CLICKHOUSE_DSN", ""))
        except Exception as exc:  # noqa: BLE001 - whatever stops it, the migration cannot go on: say so plainly
            from eventpipe.redaction import redact  # an error may quote the DSN, password included

            print(f"entrypoint: could not create the ClickHouse database: {redact(str(exc))}", file=sys.stderr)
            return 2
    os.execvp("eventpipe", ["eventpipe", *args])  # noqa: S606 - exec, so that eventpipe is PID 1 and gets SIGTERM
    return 0  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
