"""free_port: the ports tests and the bench give the servers they start."""

from __future__ import annotations

import socket

from eventpipe.host import free_port


def test_free_port_never_hands_one_process_the_same_port_twice() -> None:
    # A stack given one port for two of its servers cannot start; the kernel's pick repeats at times.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_free_port_gives_a_port_a_server_can_listen_on() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
