"""The secrets `eventpipe up` keeps in its data dir when none is set: made once, owner-only, kept across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from eventpipe.config import Settings
from eventpipe.stack.secret import CURSOR_KEY_FILE, ERASURE_KEY_FILE, SESSION_KEY_FILE, kept_secrets

FILES = (SESSION_KEY_FILE, CURSOR_KEY_FILE, ERASURE_KEY_FILE)


@pytest.fixture(autouse=True)
def _no_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MQTT_SESSION_SECRET", "CURSOR_SECRET", "ERASURE_SECRET"):
        monkeypatch.delenv(f"EVENTPIPE_{name}", raising=False)


def secrets_of(settings: Settings) -> tuple[str, ...]:
    values = (settings.mqtt_session_secret, settings.cursor_secret, settings.erasure_secret)
    return tuple(value.get_secret_value() if value else "" for value in values)


def test_unset_secrets_are_made_once_readable_by_their_owner_only_and_kept_across_restarts(tmp_path: Path) -> None:
    first = kept_secrets(Settings(data_dir=tmp_path))
    assert all(len(value) >= 32 for value in secrets_of(first))
    assert len(set(secrets_of(first))) == 3, "each secret is its own"
    for name in FILES:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    # Another secret would be another session id, an end to every cursor walk, other erasure hashes.
    assert secrets_of(kept_secrets(Settings(data_dir=tmp_path))) == secrets_of(first)


def test_a_secret_that_is_set_is_used_and_nothing_is_written_for_it(tmp_path: Path) -> None:
    chosen = "chosen-session-secret-0123456789abcdef"
    settings = kept_secrets(Settings(data_dir=tmp_path, mqtt_session_secret=SecretStr(chosen)))
    assert settings.mqtt_session_secret is not None
    assert settings.mqtt_session_secret.get_secret_value() == chosen
    assert not (tmp_path / SESSION_KEY_FILE).exists()
    assert (tmp_path / CURSOR_KEY_FILE).exists()
