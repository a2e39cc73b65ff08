"""A server in a process that has used up its file descriptors, and what that process logs while clients connect."""

from __future__ import annotations

import socket
import subprocess
import sys

from eventpipe.port import free_port

# `{start}` starts the server on the port in `port`, in the background; the process then takes every file
# descriptor its limit of 128 leaves, says so, and waits.
SCRIPT = """
import logging, os, resource, sys, time
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
port = int(sys.argv[1])
{start}
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("full", flush=True)
time.sleep(4)
"""


def log_out_of_files(start: str, clients: int = 20) -> str:
    """What the process logs while `clients` connect to a server `start` made, once it has no file left."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.replace("{start}", start), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    connected: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdout.readline() == "full\n"
        connected = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(clients)]
        return child.communicate(timeout=30)[1]
    finally:
        child.kill()
        for client in connected:
            client.close()
