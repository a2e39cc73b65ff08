"""What `eventpipe bench` sizes its broker and windows by: the settings its children run with."""

from __future__ import annotations

import os

import pytest

from eventpipe.bench import child
from eventpipe.config import Settings


def test_the_bench_sizes_by_the_settings_its_children_run_with_not_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's exported window and batch passed each other's check, but the drain's worker got only the
    window: it refused to start, naming EVENTPIPE_BATCH_MAX_ROWS, which the user had set to 5000."""
    monkeypatch.setenv("EVENTPIPE_MQTT_RECEIVE_MAXIMUM", "10000")
    monkeypatch.setenv("EVENTPIPE_BATCH_MAX_ROWS", "5000")
    monkeypatch.setenv("EVENTPIPE_MQTT_URL", "not a url")  # nothing the bench uses: no reason to refuse
    monkeypatch.setenv("EVENTPIPE_MOSQUITTO_BINARY", "/opt/mosquitto/sbin/mosquitto")
    ours = child.settings()
    monkeypatch.setattr(os, "environ", child.environment())
    theirs = Settings()
    assert (
        ours.mqtt_receive_maximum
        == theirs.mqtt_receive_maximum
        == Settings.model_fields["mqtt_receive_maximum"].default
    )
    assert ours.batch_max_rows == theirs.batch_max_rows
    assert ours.max_payload_bytes == theirs.max_payload_bytes
    assert ours.mqtt_session_expiry_s == theirs.mqtt_session_expiry_s
    assert ours.mosquitto_binary == theirs.mosquitto_binary == "/opt/mosquitto/sbin/mosquitto"
