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


@pytest.mark.parametrize(
    "argv",
    [
        # An OverflowError traceback after the data dir was made; a broker on a unix socket named 127.0.0.1.
        ["up", "--mqtt-port", "70000"],
        ["up", "--mqtt-port", "0"],
        ["up", "--api-port", "-1"],
        ["up", "--metrics-port", "http"],
        # paho's ValueError traceback at the first send.
        ["publish", "--count", "1", "--topic-prefix", "a/#"],
        ["publish", "--count", "1", "--topic-prefix", "+"],
        ["publish", "--count", "1", "--topic-prefix", "x" * 2000],
        # A traceback, and for --api-seconds an `eventpipe up` left running; -1 printed "nan ms", exit 0.
        ["bench", "--rates", "nan"],
        ["bench", "--rates", "500,inf"],
        ["bench", "--api-seconds", "nan"],
        ["bench", "--latency-seconds", "-1"],
    ],
)
def test_a_value_no_broker_socket_or_measurement_takes_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(argv)
    assert refused.value.code == 2
    assert f"argument {argv[-2]}" in capsys.readouterr().err


def test_ports_in_range_are_taken() -> None:
    args = build_parser().parse_args(["up", "--mqtt-port", "65535", "--api-port", "0", "--prometheus-port", "0"])
    assert (args.mqtt_port, args.api_port, args.prometheus_port) == (65535, 0, 0)
