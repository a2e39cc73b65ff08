"""The prober's view of the broker's answers, without a broker."""

from __future__ import annotations

import logging

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.probe import Prober


def test_a_probe_the_broker_refuses_is_said_once_naming_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    # Found walking the docs: a broker whose ACL denies the probe topic (compose's lets `ingest` write
    # events/_probe only) answered each probe PUBACK 0x87, and nothing said so: the probes counted as sent,
    # EventpipeIngestStalled paged, and neither the worker's log nor the broker's named the cause.
    prober = Prober(Settings(probe_topic="events/elsewhere"), IngestMetrics(CollectorRegistry()))
    refused = ReasonCode(PacketTypes.PUBACK, "Not authorized")
    with caplog.at_level(logging.INFO, logger="eventpipe.ingest.probe"):
        for mid in (1, 2, 3):
            prober._on_publish(prober._client, None, mid, refused, None)
        prober._on_publish(prober._client, None, 4, ReasonCode(PacketTypes.PUBACK, "Success"), None)
    said = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(said) == 1, [record.getMessage() for record in caplog.records]
    message = said[0].getMessage()
    assert "Not authorized" in message and "'events/elsewhere'" in message and "EVENTPIPE_PROBE_TOPIC" in message
