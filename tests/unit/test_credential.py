"""What `eventpipe up` keeps in its data dir: the secret survives restarts and only its owner can read it."""

from __future__ import annotations

import stat
from pathlib import Path

from eventpipe.stack.credential import kept_secret


def test_the_kept_secret_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "mqtt-session-secret"
    first = kept_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept_secret(path) == first, "another secret would be another session"
