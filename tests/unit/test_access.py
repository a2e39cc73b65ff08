"""The password file and ACL `eventpipe up` gives its broker: Mosquitto's own hash, and no rule a topic can add."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from eventpipe.errors import ConfigError
from eventpipe.stack.access import Access, hashed

# Written by `mosquitto_passwd -b passwd ingest secret1` (Mosquitto 2.0.11).
MOSQUITTO_LINE = (
    "$7$101$s0y0tDF7OuQDlNkP$QjwoXnfHy8o/9YSq75/9+k3NT3UqZqvL14O0WwBIcpx06y3pibfgsNF9b7ctvJQnJ0ckuqpcUhv3bcbhxpZYYg=="
)


def test_the_hash_is_the_one_mosquitto_passwd_writes() -> None:
    salt = base64.b64decode(MOSQUITTO_LINE.split("$")[3])
    assert hashed("secret1", salt) == MOSQUITTO_LINE
    assert hashed("secret2", salt) != MOSQUITTO_LINE


@pytest.mark.parametrize("topic", ["events/#\nuser intruder", "events/x\r", "events/\0", "events/# ", " events/#"])
def test_a_topic_that_would_add_a_line_to_the_acl_is_refused_naming_its_setting(topic: str) -> None:
    with pytest.raises(ConfigError, match="EVENTPIPE_MQTT_TOPIC"):
        Access(topic, "events/_probe")


def test_each_start_makes_another_password_and_the_worker_url_carries_it() -> None:
    first, second = Access("events/#", "events/_probe"), Access("events/#", "events/_probe")
    assert first.password != second.password
    parts = urlsplit(first.url("mqtts://127.0.0.1:1883"))
    assert (parts.scheme, parts.username, parts.password, parts.port) == ("mqtts", "ingest", first.password, 1883)
    assert first.password not in repr(first)


def test_a_probe_topic_with_a_blank_at_its_end_is_refused_naming_its_setting() -> None:
    # Mosquitto trims it in the ACL: the worker's probes were refused, and anyone's to events/_probe admitted.
    with pytest.raises(ConfigError, match="EVENTPIPE_PROBE_TOPIC starts or ends with a blank"):
        Access("events/#", "events/_probe ")


def test_the_statistics_reader_has_a_password_of_its_own_and_may_read_the_broker_statistics_alone(
    tmp_path: Path,
) -> None:
    access = Access("events/#", "events/_probe")
    assert access.monitor_password != access.password
    parts = urlsplit(access.monitor_url("mqtt://127.0.0.1:1883"))
    assert (parts.username, parts.password) == ("monitor", access.monitor_password)
    access.write(tmp_path)
    users = [line.split(":", 1)[0] for line in (tmp_path / "passwd").read_text().splitlines()]
    assert users == ["ingest", "monitor"]
    acl = (tmp_path / "acl").read_text()
    assert acl.endswith("user monitor\ntopic read $SYS/#\n")
