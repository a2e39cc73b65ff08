"""paho's clients wait on their socket by poll(): a descriptor past 1,023, which select() cannot take, still
connects, receives and publishes."""

from __future__ import annotations

import subprocess
import sys

from tests.support.services import ContainerBroker, LocalBroker

# A process already holding 1,100 files, as `eventpipe up` does under API load, then a client as the worker
# makes one: the socket's descriptor is past 1,023.
HIGH_DESCRIPTOR = """
import os, resource, sys, threading
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
from eventpipe.mqtt.address import MqttAddress
from eventpipe.mqtt.connection import make_client
got = threading.Event()
address = MqttAddress.parse(sys.argv[1])
client = make_client(address, "high-descriptor")
client.on_connect = lambda c, *_: c.subscribe("events/high", qos=1)
client.on_subscribe = lambda c, *_: c.publish("events/high", b"{}", qos=1)
client.on_message = lambda *_: got.set()
client.connect(address.host, address.port)
print("descriptor", client.socket().fileno(), flush=True)
client.loop_start()
print("received" if got.wait(10) else "nothing", flush=True)
client.loop_stop()
"""


def test_a_client_whose_socket_is_past_descriptor_1023_still_works(broker: LocalBroker | ContainerBroker) -> None:
    # paho 2.2 waits with select(), which raised ValueError past 1,023: read as a lost connection at every
    # try, ingest stopped for as long as the API held its sockets (2.5 minutes in an attack).
    done = subprocess.run(
        [sys.executable, "-c", HIGH_DESCRIPTOR, broker.url], capture_output=True, text=True, timeout=60, check=False
    )
    lines = done.stdout.split()
    assert int(lines[1]) > 1023, done.stdout + done.stderr
    assert lines[2] == "received", done.stdout + done.stderr
