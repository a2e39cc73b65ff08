"""The worker's prober on a real broker: it stops whole, even when its own thread died first."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.config import Settings
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.probe import Prober
from tests.support.services import ContainerBroker, LocalBroker


# The thread's death is the point: its traceback is expected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_prober_whose_thread_died_still_closes_its_connection_on_stop(broker: LocalBroker | ContainerBroker) -> None:
    settings = Settings(mqtt_url=broker.url, probe_interval_s=0.05)
    # A topic paho refuses to publish on ends the probe thread with its first probe, as any error there would.
    prober = Prober(settings.model_copy(update={"probe_topic": "probe/#"}), IngestMetrics(CollectorRegistry()))
    prober.start()
    network = prober._client._thread  # paho's own thread, which holds the connection
    assert network is not None
    deadline = time.monotonic() + 10
    while prober._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not prober._thread.is_alive(), "the probe thread did not die: the test proves nothing"
    prober.stop()
    # It stayed up, connected, until the process exited.
    assert not network.is_alive()
    assert not prober._client.is_connected()
