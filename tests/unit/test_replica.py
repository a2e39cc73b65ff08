"""The worker's name in a compose replica, from this machine's own resolver (its /etc/hosts answers 127.0.0.1).

How the worker image's resolver finds a replica's compose name through Docker's
DNS, and refuses the hostname /etc/hosts gives back, is run in tests/static/test_worker_image.py."""

from __future__ import annotations

import pytest

from eventpipe.config import Settings
from eventpipe.errors import ConfigError
from eventpipe.mqtt.replica import named, replica_name


def test_a_loopback_answer_is_refused() -> None:
    # Every worker on the host got "localhost", and they took each other's session.
    with pytest.raises(LookupError, match="loopback name"):
        replica_name("127.0.0.1", hostname="eventpipe-ingest-worker-2")


def test_the_hostname_back_from_etc_hosts_is_refused() -> None:
    # In a container that is its id, new at every re-creation: the session it named would be stranded.
    with pytest.raises(LookupError, match="own hostname"):
        replica_name("127.0.0.1", hostname="localhost")


def test_the_worker_takes_the_replica_name_only_when_asked_and_given_none() -> None:
    asked = Settings(mqtt_client_id_from_dns=True)
    with pytest.raises(ConfigError, match="loopback name"):
        named(asked, "127.0.0.1", "3c5e1c3b7c4d")
    chosen = Settings(mqtt_client_id_from_dns=True, mqtt_client_id="chosen")
    assert named(chosen, "127.0.0.1", "3c5e1c3b7c4d").mqtt_client_id == "chosen"
    assert named(Settings(), "127.0.0.1", "3c5e1c3b7c4d").mqtt_client_id == "eventpipe-ingest"


def test_without_a_replica_name_the_worker_does_not_start_and_says_what_to_set() -> None:
    # A made-up id would strand the old session's share of the stream at every re-creation.
    with pytest.raises(ConfigError, match="set EVENTPIPE_MQTT_CLIENT_ID"):
        named(Settings(mqtt_client_id_from_dns=True), "127.0.0.1", "localhost")
