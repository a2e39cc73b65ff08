"""Credentials `eventpipe up` makes when none is set, kept in its data dir for the next start.

A restart must not revoke the key a partner was given, nor change a secret
that names a broker session or keys a hash: each is written once, whole,
readable by its owner only (0600), and read back on every start after.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from pathlib import Path

from eventpipe.errors import ConfigError
from eventpipe.mqtt.session import MIN_SECRET_CHARS

log = logging.getLogger("eventpipe")
FILE_NAME = "api-key"


def generated_key(data_dir: Path) -> tuple[str, bool]:
    """The key kept in `data_dir`, made now if there is none; and whether it was made now."""
    path = data_dir / FILE_NAME
    made = not path.exists()
    if made:
        # Whole or absent, even after a crash mid-write, and never readable by others.
        kept_file(path, secrets.token_urlsafe(24))
    return _read(path), made


def _read(path: Path) -> str:
    key = _text(path)
    if not key or any(char.isspace() for char in key):
        raise ConfigError(f"{path} does not hold one API key: delete it to have a new one generated")
    return key


def kept_secret(path: Path) -> str:
    """The secret stored at `path`, created (random, readable by its owner only) on first use.

    It must outlive restarts: another secret is another session id, and the
    broker would keep what it queued for the old one until that expires.
    Held to the length the settings ask of one set by hand: an empty file (a crash before writes were
    whole, a hand copy) was taken as the secret, so anyone could work out the worker's session id.
    """
    secret = kept_file(path, secrets.token_hex(32))
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{path} holds a secret shorter than {MIN_SECRET_CHARS} characters, which others could guess: "
            "delete it to have one made (README, EVENTPIPE_MQTT_SESSION_SECRET, EVENTPIPE_CURSOR_SECRET and "
            "EVENTPIPE_ERASURE_SECRET, say what a new one changes)"
        )
    return secret


def kept_file(path: Path, fresh: str) -> str:
    """What `path` holds, stripped; on first use it is made to hold `fresh`, readable by its owner only.

    Written whole or not at all: a temporary file, synced, then linked into
    place, which fails if another process got there first (its value wins).
    A crash mid-write leaves no empty file to be taken for a secret."""
    try:
        there = path.exists()
    except PermissionError:
        raise _denied(path) from None
    if not there:
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(fresh + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError as exc:
            # A full disk was a traceback, and left an empty temporary file at each attempt.
            raise ConfigError(
                f"cannot write {path.name} in the data dir {path.parent}: {exc.strerror} "
                "(--data-dir, or EVENTPIPE_DATA_DIR)"
            ) from None
        finally:
            temporary.unlink(missing_ok=True)
    return _text(path)


def _text(path: Path) -> str:
    try:
        return _owner_only(path).read_text().strip()
    except PermissionError:
        raise _denied(path) from None
    except (OSError, UnicodeDecodeError) as exc:
        # A folder or an unreadable file in its place was a traceback.
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"cannot read {path}: {reason}: delete it to have a new one made") from None


def _denied(path: Path) -> ConfigError:
    # Often a start by another user (sudo): deleting it would end what it names, so never advised here.
    return ConfigError(f"cannot read {path}: permission denied: run as its owner, or give it back")


def _owner_only(path: Path) -> Path:
    """`path`, readable by its owner only from now on: an operator's copy or restore may have widened it."""
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        # Before reading, which names it the same way: the mode below would have shut a folder's owner out of it.
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        # Others could read it: close that, and say so, since they may have.
        path.chmod(0o600)
        log.warning("%s was readable by other users (mode %o): now 0600", path, mode)
    return path
