"""The keys the API admits: from the environment, `eventpipe up`, and a keys file read again when it changes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from eventpipe.api import keyring as keyring_module
from eventpipe.api.grant import Grant
from eventpipe.api.keyring import READ_WAIT_S, Keyring
from eventpipe.errors import ConfigError


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write(path: Path, *keys: dict[str, object]) -> None:
    path.write_text(json.dumps({"keys": list(keys)}))


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write(
        path,
        {"name": "partner-a", "sha256": sha("key-a"), "event_types": ["purchase"], "requests_per_minute": 60},
        {"name": "ops", "sha256": sha("key-o"), "admin": True},
    )
    return path


def test_each_source_grants_its_rights(keys_file: Path) -> None:
    keyring = Keyring(["env-one", "env-two"], keys_file, generated="made-by-up")
    assert keyring.grant("env-two") == Grant("env#2")  # every type, no limit, not admin: as before the keys file
    assert keyring.grant("made-by-up") == Grant("up#generated", admin=True)
    assert keyring.grant("key-a") == Grant("partner-a", ("purchase",), 60, False)
    assert keyring.grant("key-o") == Grant("ops", None, None, True)
    for wrong in ("", "key-", "key-a ", sha("key-a"), "KEY-A"):
        assert keyring.grant(wrong) is None, wrong


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read it: No such file or directory"),
        ("{", "Invalid JSON"),
        ('{"keys": [{"name": "x", "sha256": "key-a"}]}', "keys[0].sha256: 64 hex digits"),
    ],
)
def test_a_file_unusable_at_start_stops_the_api_naming_it_and_why(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "keys.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as refused:
        Keyring(["env"], path)
    assert str(refused.value).startswith(f"EVENTPIPE_API_KEYS_FILE {path}: ")
    assert problem in str(refused.value)
    assert "key-a" not in str(refused.value)


def test_a_key_removed_from_the_file_is_refused_at_the_next_check(keys_file: Path) -> None:
    keyring = Keyring((), keys_file)
    assert keyring.grant("key-a") is not None
    write(keys_file, {"name": "ops", "sha256": sha("key-o"), "admin": True})
    assert keyring.grant("key-a") is None
    assert keyring.grant("key-o") is not None


def test_a_check_made_while_another_reads_the_changed_file_waits_for_that_read(keys_file: Path) -> None:
    # The reader notes the file's stat before it reads: a check that trusted
    # that stat meanwhile would admit a key the file being read revokes.
    keyring = Keyring((), keys_file)
    keyring._read_ns = time.time_ns() + 10**12  # long after the file's time: the stat alone decides
    assert not keyring.stale()
    with keyring._lock:  # a read under way, as refresh starts one
        keyring._reading_since = time.monotonic()
        assert keyring.stale()


def test_an_edit_of_the_same_size_within_one_clock_tick_is_seen(tmp_path: Path) -> None:
    # Same size, and the file's time comes from a coarse clock: the stat alone may not change.
    path = tmp_path / "keys.json"
    write(path, {"name": "k", "sha256": sha("first")})
    keyring = Keyring((), path)
    before = os.stat(path)
    write(path, {"name": "k", "sha256": sha("other")})
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert keyring.grant("first") is None
    assert keyring.grant("other") == Grant("k")


def test_a_broken_edit_keeps_the_last_good_keys_logs_and_is_read_again_once_fixed(
    keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keyring = Keyring((), keys_file)
    good = keys_file.read_text()
    keys_file.write_text(good[: len(good) // 2])  # an editor caught half-way
    with caplog.at_level(logging.ERROR):
        assert keyring.grant("key-a") == Grant("partner-a", ("purchase",), 60, False)
        assert keyring.grant("key-a") is not None
    assert keyring.problem is not None and "Invalid JSON" in keyring.problem
    assert keyring.loads == {"loaded": 1, "invalid": 1}, "one log line and one count per broken version"
    [line] = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert str(keys_file) in line and "the 2 keys loaded before stay admitted" in line

    write(keys_file, {"name": "ops", "sha256": sha("key-o")})
    assert keyring.grant("key-a") is None
    assert keyring.problem is None and keyring.loads == {"loaded": 2, "invalid": 1}


def test_a_deleted_file_keeps_the_last_good_keys_until_it_is_back(keys_file: Path) -> None:
    keyring = Keyring((), keys_file)
    content = keys_file.read_text()
    keys_file.unlink()
    assert keyring.grant("key-a") is not None
    assert keyring.problem == "cannot read it: No such file or directory"
    keys_file.write_text(content)  # the same keys back: the problem is gone
    assert keyring.grant("key-a") is not None
    assert keyring.problem is None


def test_a_file_made_readable_again_is_read_again(keys_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Written unreadable (its owner or mode wrong), then fixed with chmod: nothing but its ctime changes,
    # and the failed read's stat kept the revoked key admitted until some later edit.
    keyring = Keyring((), keys_file)
    write(keys_file, {"name": "ops", "sha256": sha("key-o"), "admin": True})  # partner-a revoked
    an_hour_ago = time.time_ns() - 3600 * 10**9  # its mtime out of the racy window: its ctime decides
    os.utime(keys_file, ns=(an_hour_ago, an_hour_ago))

    def refused(path: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(keyring_module, "_read", refused)
    assert keyring.grant("key-a") is not None, "the last good keys stay while it cannot be read"
    assert keyring.problem == "cannot read it: Permission denied"
    monkeypatch.undo()
    time.sleep(0.02)  # past the file system's clock tick
    keys_file.chmod(0o644)
    assert keyring.grant("key-a") is None
    assert keyring.problem is None


def test_a_keys_file_that_is_no_regular_file_keeps_the_last_good_keys_without_blocking(keys_file: Path) -> None:
    # Opening a FIFO waits for a writer: every keyed request, then /readyz, hung behind that read.
    keyring = Keyring((), keys_file)
    content = keys_file.read_text()
    keys_file.unlink()
    os.mkfifo(keys_file)
    assert keyring.grant("key-a") is not None
    assert keyring.problem == "cannot read it: it is no regular file"
    replacement = keys_file.with_name("new.json")
    replacement.write_text(content.replace(sha("key-a"), sha("key-b")))
    replacement.replace(keys_file)
    assert keyring.grant("key-a") is None and keyring.grant("key-b") is not None


def test_a_read_that_hangs_holds_each_check_up_a_second_at_most(
    keys_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dead network mount: the read never returns, and every check waited for it, with its thread.
    keyring = Keyring((), keys_file)
    released = threading.Event()

    def hanging(path: Path) -> bytes:
        released.wait(30)
        return path.read_bytes()

    monkeypatch.setattr(keyring_module, "_read", hanging)
    write(keys_file, {"name": "ops", "sha256": sha("key-o")})
    reader = threading.Thread(target=keyring.refresh)
    reader.start()
    try:
        while not keyring._lock.locked():
            time.sleep(0.001)
        started = time.monotonic()
        assert keyring.grant("key-a") is not None, "the keys admitted before, while the read hangs"
        assert time.monotonic() - started < READ_WAIT_S + 0.5
        assert not keyring.stale(), "after a second, checks no longer wait for it"
        assert keyring.problem == "a read of it has not ended after 1 s", "and the alert's metric says so"
    finally:
        released.set()
        reader.join()
    assert keyring.grant("key-a") is None, "once it ends, what it read is admitted"


def test_a_file_key_that_is_also_an_environment_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write(path, {"name": "partner", "sha256": sha("shared"), "event_types": ["purchase"]})
    with pytest.raises(ConfigError, match="'partner' is also in EVENTPIPE_API_KEYS"):
        Keyring(["shared"], path)


def test_every_key_is_compared_as_a_digest_every_time(keys_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The constant-time comparison: no early exit, no comparison of the key itself or of its length."""
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    keyring = Keyring(["env-one", "env-two"], keys_file)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    for offered in ("env-one", "key-o", "nope", "x" * 5000):
        compared.clear()
        keyring.grant(offered)
        assert compared == [(32, 32)] * 4, offered
