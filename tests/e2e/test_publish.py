"""`eventpipe publish` against the compose broker's users and ACL: what the broker refuses is said, not counted."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.stack import run_eventpipe
from tests.support.takeover import ComposeBroker


def test_messages_the_broker_refuses_are_reported_and_fail_the_command(compose_broker: ComposeBroker) -> None:
    # The worker's user may publish only its probes: inside the worker's container, without
    # `-e EVENTPIPE_MQTT_URL`, publish takes the worker's URL. paho counts a PUBACK with reason 0x87 as
    # published, so it printed "10 acknowledged" and exited 0 with nothing stored.
    env = {**os.environ, "EVENTPIPE_MQTT_URL": compose_broker.url_for("ingest")}
    refused = run_eventpipe("publish", "--count", "10", env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "0 acknowledged by the broker (QoS 1), 10 refused (Not authorized" in refused.stdout, refused.stdout
    allowed = run_eventpipe(
        "publish", "--count", "10", env={**os.environ, "EVENTPIPE_MQTT_URL": compose_broker.url_for("producer")}
    )
    assert allowed.returncode == 0 and "10 acknowledged by the broker (QoS 1)" in allowed.stdout, allowed.stdout
    assert "refused" not in allowed.stdout


def test_a_url_given_as_a_flag_takes_no_ca_from_the_variables(compose_broker: ComposeBroker, tmp_path: Path) -> None:
    # The variables' CA is for the variables' URL: mixed with a plain --mqtt-url it stopped publish
    # ("EVENTPIPE_MQTT_CA_FILE is set, so EVENTPIPE_MQTT_URL must be mqtts://").
    ca = tmp_path / "ca.pem"
    ca.write_text("not used\n")
    env = {**os.environ, "EVENTPIPE_MQTT_URL": "mqtts://elsewhere:8883", "EVENTPIPE_MQTT_CA_FILE": str(ca)}
    done = run_eventpipe("publish", "--mqtt-url", compose_broker.url_for("producer"), "--count", "5", env=env)
    assert done.returncode == 0 and "5 acknowledged" in done.stdout, done.stdout + done.stderr
