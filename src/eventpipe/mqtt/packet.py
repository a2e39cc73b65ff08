"""MQTT packet limits that follow from EVENTPIPE_MAX_PAYLOAD_BYTES: the broker's and the worker's.

The broker refuses a larger packet as soon as its header arrives (Mosquitto's
max_packet_size), before it reads or stores any of it; the worker announces a
Maximum Packet Size so that a broker without that limit still cannot send it
more. What fits both still becomes an event, or a dead letter (`oversize`) when
its payload alone is over the limit, as before.
"""

from __future__ import annotations

# What a PUBLISH carries besides its payload: fixed header (at most 5 bytes),
# topic (2 + its length), packet id (2) and properties. An events/<type> topic
# with a few user properties needs far less; a topic of several KiB is no
# event type anyone sends.
HEADROOM = 4096
# Mosquitto checks an incoming packet with its type byte but without its length
# bytes, an outgoing one with its length bytes (up to 4) but without its type
# byte; a message from an MQTT 3 publisher gains a property-length byte on its
# way to an MQTT 5 subscriber, and a QoS 0 one a packet id, since the broker
# queues it for the worker as QoS 1 (upgrade_outgoing_qos): -1 + 4 + 1 + 2. The
# worker takes this much more than the broker's limit, or the broker would take
# the largest messages it accepts and then drop them for the worker ("Dropping
# too large outgoing PUBLISH") without a trace: with 4, an MQTT 3 producer's
# largest QoS 0 messages never arrived, neither events nor dead letters.
WAY_OUT = 6
# MQTT's largest packet (a four-byte remaining length), and so the largest payload the worker can announce.
MQTT_MAX_PACKET = 268_435_455
LARGEST_PAYLOAD = MQTT_MAX_PACKET - HEADROOM - WAY_OUT


def broker_limit(max_payload_bytes: int) -> int:
    """Mosquitto's max_packet_size for a worker that takes payloads up to `max_payload_bytes`."""
    return max_payload_bytes + HEADROOM


def worker_limit(max_payload_bytes: int) -> int:
    """The Maximum Packet Size the worker announces in its CONNECT."""
    return broker_limit(max_payload_bytes) + WAY_OUT


def loses_messages(broker_maximum: int | None, max_payload_bytes: int) -> bool:
    """Whether a broker that advertised `broker_maximum` (None: no limit) can accept messages
    that it must then drop for the worker."""
    return broker_maximum is None or broker_maximum > broker_limit(max_payload_bytes)
