"""MQTT URLs as users write them."""

from __future__ import annotations

import pytest

from eventpipe.errors import ConfigError
from eventpipe.mqtt.address import MqttAddress


def test_a_plain_url_gets_the_default_port() -> None:
    assert MqttAddress.parse("mqtt://broker") == MqttAddress("broker", 1883)


def test_credentials_and_tls_are_read() -> None:
    address = MqttAddress.parse("mqtts://ingest:s%40cret@mq.example:8884")
    assert address == MqttAddress("mq.example", 8884, "ingest", "s@cret", tls=True)
    assert "s@cret" not in str(address) and "s@cret" not in repr(address)


@pytest.mark.parametrize("url", ["http://broker:1883", "mqtt://", "mqtt://broker:notaport", "broker:1883"])
def test_unusable_urls_are_refused_with_a_message(url: str) -> None:
    with pytest.raises(ConfigError, match="MQTT URL"):
        MqttAddress.parse(url)
