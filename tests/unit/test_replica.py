"""The worker's name in a compose replica, from this machine's own resolver (its /etc/hosts answers 127.0.0.1).

How the worker image's resolver finds a replica's compose name through Docker's
DNS is run in tests/static/test_worker_image.py."""

from __future__ import annotations

import pytest

from eventpipe.config import Settings
from eventpipe.errors import ConfigError
from eventpipe.mqtt.replica import named, replica_name


def test_the_name_is_the_first_label_the_resolver_gives_the_address() -> None:
    assert replica_name("127.0.0.1", hostname="eventpipe-ingest-worker-2") == "localhost"


def test_the_hostname_back_from_etc_hosts_is_refused() -> None:
    # In a container that is its id, new at every re-creation: the session it named would be stranded.
    with pytest.raises(LookupError, match="own hostname"):
        replica_name("127.0.0.1", hostname="localhost")


def test_the_worker_takes_the_replica_name_only_when_asked_and_given_none() -> None:
    asked = Settings(mqtt_client_id_from_dns=True)
    assert named(asked, "127.0.0.1", "3c5e1c3b7c4d").mqtt_client_id == "localhost"
    chosen = Settings(mqtt_client_id_from_dns=True, mqtt_client_id="chosen")
    assert named(chosen, "127.0.0.1", "3c5e1c3b7c4d").mqtt_client_id == "chosen"
    assert named(Settings(), "127.0.0.1", "3c5e1c3b7c4d").mqtt_client_id == "eventpipe-ingest"


def test_without_a_replica_name_the_worker_does_not_start_and_says_what_to_set() -> None:
    # A made-up id would strand the old session's share of the stream at every re-creation.
    with pytest.raises(ConfigError, match="set EVENTPIPE_MQTT_CLIENT_ID"):
        named(Settings(mqtt_client_id_from_dns=True), "127.0.0.1", "localhost")
