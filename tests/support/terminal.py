"""A command run on a pseudo-terminal, as a user's shell runs it: for what must never wait on a prompt."""

from __future__ import annotations

import os
import select
import subprocess


def on_terminal(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, subprocess.Popen[bytes]]:
    """ARGV with a pseudo-terminal for its input and output, in a session of its own (OpenSSL prompts on the
    input when the process has no controlling terminal). Returns our end of the terminal and the process."""
    terminal, other_end = os.openpty()
    try:
        process = subprocess.Popen(
            argv, stdin=other_end, stdout=other_end, stderr=other_end, env=env, start_new_session=True
        )
    finally:
        os.close(other_end)
    return terminal, process


def read_terminal(terminal: int) -> str:
    """What was written to the terminal so far; closes it."""
    output = b""
    try:
        while select.select([terminal], [], [], 0.5)[0]:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: every process holding the other end has closed it
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(terminal)
    return output.decode(errors="replace")


def finished(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Its exit code, or None when it was still running after TIMEOUT seconds (then killed)."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
