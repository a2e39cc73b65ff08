"""A compose container's name resolution, without Docker: run as `unshare -mnu python -m tests.support.dns
NSSWITCH PTR_NAME`, it gives this process a container's hostname, /etc/hosts and resolv.conf (Docker's DNS
at 127.0.0.1:53 in the new network namespace), the nsswitch.conf given, and a stand-in for Docker's embedded
DNS server that answers every reverse lookup with PTR_NAME, as Docker's does for a container's own address.
It prints what eventpipe.mqtt.replica.replica_name() gives, or its error."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HOSTNAME = "3c5e1c3b7c4d"  # a container id, as Docker names a container's host
ADDRESS = "172.18.0.5"
# What Docker writes into a container's /etc/hosts: its address under its hostname.
HOSTS = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ADDRESS}\t{HOSTNAME}\n"


def _name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split(".")) + b"\0"


def serve_ptr(sock: socket.socket, ptr_name: str) -> None:
    """Answer each query with one PTR record, its name compressed against the question, as Docker's DNS does."""
    while True:
        query, client = sock.recvfrom(512)
        data = _name(ptr_name)
        answer = struct.pack("!HHHIH", 0xC00C, 12, 1, 600, len(data)) + data
        sock.sendto(query[:2] + struct.pack("!5H", 0x8180, 1, 1, 0, 0) + query[12:] + answer, client)


def main(nsswitch: str, ptr_name: str) -> None:
    folder = Path(tempfile.mkdtemp())
    files = {"/etc/hosts": HOSTS, "/etc/resolv.conf": "nameserver 127.0.0.1\n", "/etc/nsswitch.conf": nsswitch}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["hostname", HOSTNAME], check=True)
    for target, text in files.items():
        source = folder / Path(target).name
        source.write_text(text)
        subprocess.run(["mount", "--bind", str(source), target], check=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the server side, standing in for Docker's
    sock.bind(("127.0.0.1", 53))
    threading.Thread(target=serve_ptr, args=(sock, ptr_name), daemon=True).start()

    from eventpipe.mqtt.replica import replica_name

    try:
        print(f"name {replica_name()}")
    except LookupError as exc:
        print(f"refused {exc}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).read_text(), sys.argv[2])
