"""free_port: the ports tests and the bench give the servers they start."""

from __future__ import annotations

import errno
import fcntl
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from eventpipe import port
from eventpipe.port import free_port, set_share


def test_free_port_never_hands_one_process_the_same_port_twice() -> None:
    # A stack given one port for two of its servers cannot start; the kernel's pick repeats at times.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_free_port_gives_a_port_a_server_can_listen_on() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()


def test_free_port_stays_out_of_the_range_outgoing_connections_draw_from() -> None:
    # A port from the kernel's ephemeral range was taken by a client socket between the pick and the API's
    # bind: `eventpipe up` failed with "address already in use" (CI, tests/fault/test_takeover.py).
    low, high = map(int, port.EPHEMERAL.read_text().split())
    ports = [free_port() for _ in range(500)]
    assert not [port for port in ports if low <= port <= high]
    assert min(ports) >= port.LOWEST


@pytest.mark.parametrize(
    ("address", "family"), [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)], ids=["IPv4", "IPv6 alone"]
)
def test_free_port_passes_over_a_port_something_listens_on(
    address: str, family: socket.AddressFamily, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server on ::1 alone passed for free: one then started on that port over IPv6 failed (a review).
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    monkeypatch.setattr(port, "_share", [0, 1])  # every port in this process's share
    free = free_port()
    with socket.create_server((address, 0), family=family) as taken:
        held = taken.getsockname()[1]
        picks = iter([held, held, free])
        monkeypatch.setattr(port, "_pick", lambda _spans: next(picks))
        monkeypatch.setattr(port, "_given", set())
        assert free_port() == free


@pytest.mark.parametrize(
    "kernel_range",
    # 10004-65531 leaves 8 ports outside, which free_port gave up on once they were taken (a review);
    # 1024-65535 leaves none.
    ["10004\t65531\n", "1024\t65535\n"],
    ids=["a few ports outside", "none outside"],
)
def test_when_no_port_outside_the_range_is_free_the_kernels_picks_are_taken(
    kernel_range: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = tmp_path / "ip_local_port_range"
    configured.write_text(kernel_range)
    monkeypatch.setattr(port, "EPHEMERAL", configured)
    monkeypatch.setattr(port, "OUTSIDE_TRIES", 50)
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20 and all(1024 <= port <= 65535 for port in ports)


def test_two_test_processes_are_never_handed_the_same_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each process remembers only its own ports: two pytest-xdist workers could both be handed one
    # port before either listened on it, and a stack would start on the other's broker or fail.
    monkeypatch.setattr(port, "_share", [0, 1])  # this process's own share again after the test
    shares = []
    for number in (0, 1):
        set_share(number, 2)
        shares.append({free_port() for _ in range(300)})
    assert not shares[0] & shares[1]
    assert {given >> 1 & 1 for given in shares[0]} == {0} and {given >> 1 & 1 for given in shares[1]} == {1}


def test_a_share_past_the_count_is_refused() -> None:
    with pytest.raises(ValueError, match="share 2 of 2"):
        set_share(2, 2)


CLAIM = """
import sys
from eventpipe.port import claim, free_port
print(*(free_port() if port == "free" else claim(int(port)) for port in sys.argv[1:]))
"""


def in_another_process(*asks: str | int) -> list[str]:
    """What free_port ("free") or claim(port) answer in a process of its own, in order."""
    done = subprocess.run([sys.executable, "-c", CLAIM, *map(str, asks)], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_a_port_given_to_one_process_is_not_given_to_another_until_that_one_ends() -> None:
    # Two test runs at once (a developer's and CI's, or two benchmarks) each remembered only their own
    # ports: both could be handed one port before either listened on it.
    assert in_another_process(free_port()) == ["False"]
    theirs, again = in_another_process("free", "free")
    # That process has ended, and its claims with it.
    assert in_another_process(theirs, again) == ["True", "True"]


def test_a_file_system_without_record_locks_leaves_ports_to_this_process_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every port looked held (ENOLCK on NFS or some FUSE temp dirs), and free_port never returned.
    def no_locks(*_args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(port, "_claims", [])
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    ports = {free_port() for _ in range(3)}
    assert len(ports) == 3 and port._claims == [-1]
