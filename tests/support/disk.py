"""A real full filesystem: a small tmpfs filled to its last byte, for the errors a full disk gives."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def full_filesystem(directory: Path, size: str = "256k", filled: bool = True) -> Iterator[Path]:
    """`directory` with a tmpfs mounted on it and filled (or left for the test to `fill`); unmounted
    afterwards. Skips the test unless root may mount one (a fake ENOSPC would not show what the kernel does
    with a partly written file)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        if filled:
            fill(directory / "filler")
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def fill(path: Path) -> None:
    """Write `path` until its filesystem has no byte left."""
    # Unbuffered: a buffered file would raise ENOSPC again on close.
    filler = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(filler, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(filler)
