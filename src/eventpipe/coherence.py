"""Settings that are each valid alone but fail together at run time: what config.Settings refuses after
reading every one of them, saying which variables disagree."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from eventpipe.mqtt import packet, topic

if TYPE_CHECKING:
    from eventpipe.config import Settings


def problem(settings: Settings) -> str | None:
    """What `settings` get wrong together, naming their variables; None when they agree."""
    if (settings.api_tls_cert_file is None) != (settings.api_tls_key_file is None):
        return "EVENTPIPE_API_TLS_CERT_FILE and EVENTPIPE_API_TLS_KEY_FILE go together: set both for HTTPS, or neither"
    if settings.mqtt_ca_file is not None and urlsplit(settings.mqtt_url).scheme not in ("mqtts", "ssl"):
        # A CA for a plain connection would be ignored: the operator believes in a TLS that is not there.
        return "EVENTPIPE_MQTT_CA_FILE is set, so EVENTPIPE_MQTT_URL must be mqtts://, not plain mqtt://"
    # With acks only after commit, a batch larger than the window can never
    # fill: the broker stops sending and every batch waits for its timer.
    if settings.mqtt_receive_maximum < settings.batch_max_rows:
        return (
            f"EVENTPIPE_MQTT_RECEIVE_MAXIMUM ({settings.mqtt_receive_maximum}) must be at least "
            f"EVENTPIPE_BATCH_MAX_ROWS ({settings.batch_max_rows}), or the worker stalls"
        )
    largest = packet.worker_limit(settings.max_payload_bytes)
    if settings.max_held_bytes < 2 * largest:
        # A message is held as its topic and its payload, cut to max_payload_bytes + 1 (for its
        # dead letter): together at most the packet size the worker announces. A batch closes at
        # half the budget: that half must hold one message, or the receive side could wait for
        # room while the batch waits for its timer.
        return (
            f"EVENTPIPE_MAX_HELD_BYTES ({settings.max_held_bytes}) must be at least twice the largest message "
            f"the worker takes, EVENTPIPE_MAX_PAYLOAD_BYTES and its topic ({2 * largest}), so that a batch "
            "closed at half of it holds a whole message"
        )
    if settings.retry_max_s < settings.retry_initial_s:
        return "EVENTPIPE_RETRY_MAX_S must be at least EVENTPIPE_RETRY_INITIAL_S"
    return topic.settings_problem(
        settings.mqtt_topic, settings.mqtt_share_group, settings.probe_topic, settings.probe_interval_s
    )
