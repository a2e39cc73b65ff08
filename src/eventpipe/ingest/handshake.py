"""What the broker's CONNACK says against the worker's settings: a mismatch that slows the worker or loses
messages is logged with the setting to change, and the broker's values are exported as gauges; and the
subscription that follows it."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from eventpipe.config import Settings
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.mqtt import packet
from eventpipe.mqtt.session import Subscription

log = logging.getLogger(__name__)


def check_window(settings: Settings, metrics: IngestMetrics, broker_window: int) -> None:
    # Mosquitto advertises max_inflight_messages as its Receive Maximum (for
    # what clients send it) and sends subscribers up to about that many
    # unacked messages; other brokers may mean only the first.
    metrics.broker_window.set(broker_window)
    ours = settings.mqtt_receive_maximum
    if broker_window != ours:
        log.error(
            "the broker's in-flight window is %d (Mosquitto: max_inflight_messages) but the worker's is %d "
            "(EVENTPIPE_MQTT_RECEIVE_MAXIMUM): set both to the same value, or the worker %s",
            broker_window,
            ours,
            "stops reading the socket whenever it is full (slower)"
            if broker_window > ours
            else "cannot fill its batches and waits on its timer",
        )


def check_packet_limit(settings: Settings, metrics: IngestMetrics, broker_maximum: int | None) -> None:
    metrics.broker_max_packet.set(float("inf") if broker_maximum is None else broker_maximum)
    if packet.loses_messages(broker_maximum, settings.max_payload_bytes):
        log.error(
            "the broker accepts packets up to %s (Mosquitto: max_packet_size) but the worker takes at most %d "
            "bytes (EVENTPIPE_MAX_PAYLOAD_BYTES + %d): the broker acknowledges larger messages, then drops them "
            "for this worker without a trace; set max_packet_size %d",
            "any size" if broker_maximum is None else f"{broker_maximum} bytes",
            packet.worker_limit(settings.max_payload_bytes),
            packet.HEADROOM + packet.WAY_OUT,
            packet.broker_limit(settings.max_payload_bytes),
        )


def session_lost(metrics: IngestMetrics) -> None:
    """Count a session the broker should have held and had not."""
    metrics.sessions_lost.inc()
    metrics.session_lost_at.set_to_current_time()


def check_missing_session(
    metrics: IngestMetrics, generation: int, last_held: tuple[int, int] | None, now_ms: int
) -> None:
    """The broker had no session for this worker at the connect of `generation` (1: the process's first)."""
    if generation == 1:
        check_first_session(metrics, last_held, now_ms)
        return
    session_lost(metrics)
    log.error(
        "the broker had no session for this worker on reconnecting: what it queued for it meanwhile is gone "
        "(a client that took the session with a clean start, a broker restarted without its persistence, "
        "or an expired session)"
    )


def check_first_session(metrics: IngestMetrics, last_held: tuple[int, int] | None, now_ms: int) -> None:
    """At a worker's first connect, the broker having no session for it: lost if the worker last held one
    (its newest session mark, `last_held`: when, and the expiry the session had then) less than that
    expiry ago. Nothing is counted for a worker that never held one under this session id and broker, nor
    for one whose session expired (that is only said)."""
    if last_held is None:
        return
    held_ms, expiry_s = last_held
    away_s = max(0, now_ms - held_ms) / 1000
    if away_s >= expiry_s:
        log.warning(
            "the broker had no session for this worker, last connected %.0f s ago, longer than its session"
            " lasted (%d s, EVENTPIPE_MQTT_SESSION_EXPIRY_S or the broker's cap): what was queued for it until"
            " the session expired is gone",
            away_s,
            expiry_s,
        )
        return
    session_lost(metrics)
    log.error(
        "the broker had no session for this worker, last connected %.0f s ago, within the %d s its session lasts:"
        " what was queued for it while it was stopped is gone (a broker restarted without its persistence, or a"
        " client that took the session with a clean start)",
        away_s,
        expiry_s,
    )


def subscribe(client: mqtt.Client, subscription: Subscription, resumed: bool) -> str | None:
    """Subscribe on a connection the broker accepted; what stops the worker if it cannot, else None."""
    try:
        # Retained messages are not sent on subscribing: the worker subscribes on every connect, and
        # got every retained message again each time (10,000 stored again after a restart in an
        # attack). Published while its session exists, a retained message arrives like any other.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        client.subscribe(subscription.name, options=options)
        if resumed and subscription.plain is not None:
            # A session from before the group's HMAC still holds the plain group, which would
            # deliver every message a second time and stays open to producers: left.
            client.unsubscribe(subscription.plain)
    except ValueError as exc:
        # An exception here would end paho's network thread without a word.
        failure = f"cannot subscribe to {subscription.shown!r}: {exc}"
        log.error("%s", failure)
        return failure
    return None
