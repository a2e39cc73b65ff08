"""The worker's session id: stable for one name and secret, different for anything else, unguessable without
the secret."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from eventpipe.config import Settings
from eventpipe.mqtt.session import session_id

SECRET = secrets.token_hex(16)


def test_the_id_is_the_name_and_128_bits_only_the_secret_gives() -> None:
    chosen = session_id("eventpipe-ingest-worker-1", SECRET)
    assert chosen.startswith("eventpipe-ingest-worker-1-")
    assert len(chosen.rsplit("-", 1)[1]) == 32
    assert chosen == session_id("eventpipe-ingest-worker-1", SECRET), "a restarted worker must find its session"
    assert chosen != session_id("eventpipe-ingest-worker-2", SECRET), "replicas need sessions of their own"
    assert chosen != session_id("eventpipe-ingest-worker-1", SECRET + "x")
    assert SECRET not in chosen


def test_settings_use_the_derived_id_once_a_secret_is_set() -> None:
    assert Settings(mqtt_client_id="w").mqtt_session_id == "w"
    assert Settings(mqtt_client_id="w", mqtt_session_secret=SECRET).mqtt_session_id == session_id("w", SECRET)
    assert Settings(mqtt_session_secret="").mqtt_session_secret is None


def test_a_short_secret_is_refused_without_being_quoted() -> None:
    short = secrets.token_hex(15)
    with pytest.raises(ValidationError) as caught:
        Settings(mqtt_session_secret=short)
    problem = str(caught.value.errors(include_input=False))
    assert "mqtt_session_secret" in problem and "32" in problem
    assert short not in problem
