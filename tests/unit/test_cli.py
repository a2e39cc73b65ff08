"""How `eventpipe up` reads --mqtt-url: a URL, alone (the broker EVENTPIPE_MQTT_URL names), or absent."""

from __future__ import annotations

import pytest

from eventpipe.cli.main import build_parser


@pytest.mark.parametrize(
    ("argv", "mqtt_url"),
    [
        (["up", "--mqtt-url", "mqtt://h:1883", "--data-dir", "d"], "mqtt://h:1883"),
        (["up", "--mqtt-url", "--data-dir", "d"], ""),
        (["up", "--data-dir", "d", "--mqtt-url"], ""),
        (["up", "--data-dir", "d"], None),
    ],
)
def test_mqtt_url_is_a_url_alone_or_absent(argv: list[str], mqtt_url: str | None) -> None:
    args = build_parser().parse_args(argv)
    assert (args.mqtt_url, args.data_dir) == (mqtt_url, "d")


def test_mqtt_url_alone_still_excludes_the_port_of_a_broker_up_would_start() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--mqtt-url", "--mqtt-port", "5"])
