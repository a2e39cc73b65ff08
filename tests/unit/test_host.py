"""free_port: the ports tests and the bench give the servers they start."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from eventpipe import host
from eventpipe.host import free_port, interrupted_by


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
    low, high = map(int, host.EPHEMERAL.read_text().split())
    ports = [free_port() for _ in range(500)]
    assert not [port for port in ports if low <= port <= high]
    assert min(ports) >= host.LOWEST


@pytest.mark.parametrize(
    ("address", "family"), [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)], ids=["IPv4", "IPv6 alone"]
)
def test_free_port_passes_over_a_port_something_listens_on(
    address: str, family: socket.AddressFamily, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server on ::1 alone passed for free: one then started on that port over IPv6 failed (a review).
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # every port in this process's share
    free = free_port()
    with socket.create_server((address, 0), family=family) as taken:
        port = taken.getsockname()[1]
        picks = iter([port, port, free])
        monkeypatch.setattr(host, "_pick", lambda _spans: next(picks))
        monkeypatch.setattr(host, "_given", set())
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
    monkeypatch.setattr(host, "EPHEMERAL", configured)
    monkeypatch.setattr(host, "OUTSIDE_TRIES", 50)
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20 and all(1024 <= port <= 65535 for port in ports)


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


CLAIM = """
import sys
from eventpipe.host import claim, free_port
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

    monkeypatch.setattr(host, "_claims", [])
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    ports = {free_port() for _ in range(3)}
    assert len(ports) == 3 and host._claims == [-1]


RAISE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
from eventpipe.host import raise_file_limit
print(raise_file_limit())
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(
    ("soft", "hard", "after", "warned"),
    [(256, 4096, 1024, False), (256, 512, 512, True), (1024, 1024, 1024, False), (2048, 4096, 2048, False)],
    ids=["raised to 1,024", "still short: warned", "enough already", "higher: left as it is"],
)
def test_a_server_takes_the_files_it_needs_and_no_more(soft: int, hard: int, after: int, warned: bool) -> None:
    # `eventpipe up` under a soft limit of 256 ran out of files under load (and under 64 failed at start),
    # though the hard limit allowed far more. Past 1,024, paho's select() cannot watch the worker's socket.
    done = subprocess.run(
        [sys.executable, "-c", RAISE, str(soft), str(hard)], capture_output=True, text=True, check=True
    )
    warning, limit = done.stdout.splitlines()
    assert int(limit) == after
    assert ("ulimit -n 1024" in warning) is warned, warning


def test_a_signal_at_its_default_interrupts_the_block_and_an_ignored_one_stays_ignored() -> None:
    # Under nohup a terminal's hang-up is ignored: a restore that took it as Ctrl-C stopped after its drop.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupted_by(signal.SIGHUP, signal.SIGUSR1):
            os.kill(os.getpid(), signal.SIGHUP)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGUSR1)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
