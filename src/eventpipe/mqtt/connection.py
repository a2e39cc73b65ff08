"""paho-mqtt clients set up one way for every part: MQTT v5, credentials, TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from eventpipe.errors import ConfigError
from eventpipe.mqtt import poller
from eventpipe.mqtt.address import MqttAddress


def make_client(
    address: MqttAddress,
    client_id: str,
    *,
    manual_ack: bool = False,
    client_class: type[mqtt.Client] = mqtt.Client,
    ca_file: Path | None = None,
) -> mqtt.Client:
    """A client for `address`; over TLS (mqtts://) it trusts only `ca_file` when given, else the system's CAs."""
    poller.install()  # paho's select() fails on descriptors past 1,023
    client = client_class(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if address.username:
        client.username_pw_set(address.username, address.password)
    if ca_file is not None and not address.tls:
        raise ConfigError(f"a CA file is for TLS: use an mqtts:// URL for {address}, not mqtt://")
    if address.tls:
        # paho verifies the certificate and that it names address.host.
        try:
            client.tls_set(ca_certs=str(ca_file) if ca_file is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the CA certificates in {ca_file} (EVENTPIPE_MQTT_CA_FILE or --ca-file): {exc}"
            ) from exc
    return client
