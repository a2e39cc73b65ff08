"""paho-mqtt clients set up one way for every part: MQTT v5, credentials, TLS."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from eventpipe.broker.address import MqttAddress


def make_client(
    address: MqttAddress, client_id: str, *, manual_ack: bool = False, client_class: type[mqtt.Client] = mqtt.Client
) -> mqtt.Client:
    client = client_class(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    return client
