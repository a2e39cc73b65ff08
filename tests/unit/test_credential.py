"""What `eventpipe up` keeps in its data dir: the secret survives restarts and only its owner can read it."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventpipe.errors import ConfigError
from eventpipe.stack.credential import generated_key, kept_secret
from tests.support.disk import full_filesystem


def test_the_kept_secret_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "mqtt-session-secret"
    first = kept_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept_secret(path) == first, "another secret would be another session"


def test_a_kept_secret_others_could_read_is_closed_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The API key had this check; the session, cursor and erasure secrets did not (a 0644 copy stayed 0644).
    for name in ("mqtt-session-secret", "cursor-secret", "erasure-secret", "api-key"):
        path = tmp_path / name
        path.write_text("0123456789abcdef0123456789abcdef\n")
        path.chmod(0o644)
        kept = generated_key(tmp_path)[0] if name == "api-key" else kept_secret(path)
        assert kept == "0123456789abcdef0123456789abcdef", "the value is kept"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert f"{path} was readable by other users (mode 644): now 0600" in caplog.text
        caplog.clear()


def test_a_full_disk_is_named_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    # It was a raw ENOSPC traceback, with an empty `.mqtt-session-secret.<pid>` left at each attempt.
    with full_filesystem(tmp_path / "small") as data_dir:
        for _attempt in range(2):
            with pytest.raises(ConfigError, match=rf"cannot write mqtt-session-secret in the data dir {data_dir}: "):
                kept_secret(data_dir / "mqtt-session-secret")
        assert sorted(path.name for path in data_dir.iterdir()) == ["filler"]


@pytest.mark.parametrize("held", ["", "\n", "ab"], ids=["empty", "a blank line", "short"])
def test_a_kept_secret_too_short_to_be_unguessable_is_refused(tmp_path: Path, held: str) -> None:
    # It was taken as the secret: with an empty mqtt-session-secret the worker's session id was
    # HMAC("eventpipe-ingest", ""), which any local client could compute and take over.
    for name in ("mqtt-session-secret", "cursor-secret", "erasure-secret"):
        path = tmp_path / name
        path.write_text(held)
        with pytest.raises(ConfigError, match=rf"{path} holds a secret shorter than 32 characters.*delete it"):
            kept_secret(path)


def test_a_folder_in_a_kept_files_place_is_named_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "mqtt-session-secret").mkdir()
    (tmp_path / "api-key").mkdir(mode=0o755)
    (tmp_path / "api-key").chmod(0o755)  # whatever the umask
    with pytest.raises(ConfigError, match=r"cannot read .*mqtt-session-secret: Is a directory"):
        kept_secret(tmp_path / "mqtt-session-secret")
    with pytest.raises(ConfigError, match=r"cannot read .*api-key: Is a directory"):
        generated_key(tmp_path)
    # Left as it was: made 0600, the folder had shut out its own owner (no x bit), with a warning about it.
    assert stat.S_IMODE((tmp_path / "api-key").stat().st_mode) == 0o755


@contextlib.contextmanager
def running_as_nobody() -> Iterator[None]:
    """This thread's effective user `nobody` for a moment (root only), as after a `sudo eventpipe up`."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_kept_file_of_another_user_is_not_advised_away(tmp_path: Path) -> None:
    # Deleting it (the advice for a folder in its place) would end the session, key or hashes it names.
    path = tmp_path / "mqtt-session-secret"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    path.chmod(0o600)
    with running_as_nobody(), pytest.raises(ConfigError) as refused:
        kept_secret(path)
    assert "permission denied: run as its owner" in str(refused.value)
    assert "delete" not in str(refused.value)
