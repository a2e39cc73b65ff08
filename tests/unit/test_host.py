"""free_port: the ports tests and the bench give the servers they start."""

from __future__ import annotations

import socket

import pytest

from eventpipe.host import free_port


def test_free_port_never_hands_one_process_the_same_port_twice() -> None:
    # A stack given one port for two of its servers cannot start; the kernel's pick repeats at times.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_free_port_gives_a_port_a_server_can_listen_on() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()


def test_two_test_processes_are_never_handed_the_same_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each process remembers only its own ports: two pytest-xdist workers could both be handed one
    # port before either listened on it, and a stack would start on the other's broker or fail.
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    shares = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        shares.append({free_port() for _ in range(300)})
    assert not shares[0] & shares[1]
    assert {port >> 1 & 1 for port in shares[0]} == {0} and {port >> 1 & 1 for port in shares[1]} == {1}
