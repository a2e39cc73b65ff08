"""Probe events: the worker publishes one now and then and watches it come back committed.

They travel the real path (broker, subscription, batch, ClickHouse) as ordinary
events of type `_probe`, so an idle pipe still reports its freshness and a
stalled one shows even when no producer is sending.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from eventpipe.config import Settings
from eventpipe.events import PROBE_EVENT_TYPE
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client

log = logging.getLogger(__name__)


def client_id(session_id: str) -> str:
    """The prober's MQTT client id: derived from the worker's session id, as unguessable (a known one could
    be kept off the broker at will)."""
    return f"{session_id}-probe"


class Prober:
    def __init__(self, settings: Settings, metrics: IngestMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._address = MqttAddress.parse(settings.mqtt_url)
        self._client = make_client(self._address, client_id(settings.mqtt_session_id), ca_file=settings.mqtt_ca_file)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_publish = self._on_publish
        self._refusals: set[str] = set()  # what the broker answered a probe with, said once each
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventpipe-probe", daemon=True)

    def start(self) -> None:
        if self._settings.probe_interval_s <= 0:
            return
        self._client.connect_async(self._address.host, self._address.port, keepalive=60)
        self._client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is None:
            return  # never started: no connection, no network thread
        self._thread.join(5)
        # Whether or not the probe thread still runs: one that died left paho's thread and connection up.
        self._client.disconnect()
        self._client.loop_stop()

    def _on_publish(self, _client: Any, _userdata: Any, _mid: int, reason: Any, _properties: Any) -> None:
        # A broker whose ACL denies the probe topic answers each probe PUBACK 0x87 and logs nothing: the probes
        # count as sent, EventpipeIngestStalled pages, and this line is the one that names the cause.
        if not getattr(reason, "is_failure", False) or str(reason) in self._refusals:
            return
        self._refusals.add(str(reason))
        log.error(
            "the broker refused this worker's probe to %r: %s; probes cannot be committed, so probe freshness and "
            "EventpipeIngestStalled see a stalled pipe: the broker must let the worker's user publish there "
            "(EVENTPIPE_PROBE_TOPIC; compose: mosquitto/acl)",
            self._settings.probe_topic,
            reason,
        )

    def _run(self) -> None:
        while not self._stop.wait(self._settings.probe_interval_s):
            body = {
                "event_id": str(uuid.uuid4()),
                "event_type": PROBE_EVENT_TYPE,
                "timestamp": time.time_ns() // 1_000_000,
                "worker": self._settings.mqtt_client_id,
            }
            info = self._client.publish(self._settings.probe_topic, json.dumps(body), qos=1)
            if info.rc == 0:
                self._metrics.probes_sent.inc()
            else:
                log.debug("probe not sent (rc %s); the next one will be", info.rc)
