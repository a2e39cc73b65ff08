"""MQTT topic filters and the worker's topic settings (mqtt.topic), checked before the worker subscribes:
a filter the broker would refuse, a share group it would misread, or a probe topic the worker cannot publish
to or would never receive is refused at start, naming the variable to fix."""

from __future__ import annotations

import pytest

from eventpipe.events.contract import PROBE_TOPIC, TOPIC_FILTER
from eventpipe.mqtt.topic import filter_problem, settings_problem


@pytest.mark.parametrize(
    "topic",
    [
        "#",
        "+",
        "events/#",
        "events/+",
        "events/+/clicks",
        "+/+/#",
        "/",  # two empty levels: legal in MQTT
        "a//b",
        "events/",
        "/events",
        "$SYS/#",
        "$share/group/events/#",  # the broker's own form of a shared subscription
        "café/+/💩",
        "with space/+",
        "events/" + "x" * 10_000,
    ],
)
def test_a_valid_filter_has_no_problem(topic: str) -> None:
    assert filter_problem(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "#/events",  # '#' only as the last level
        "events/#/more",
        "events/#/#",
        "a#",  # '#' only as a whole level
        "events/clicks#",
        "##",
        "+#",
        "#+",
        "a+",  # '+' only as a whole level
        "+a/b",
        "events/a+b",
        "events/++",
        "$share/g+/events/#",
        "é#",
    ],
)
def test_a_wildcard_inside_a_level_or_a_hash_before_the_last_is_refused(topic: str) -> None:
    assert filter_problem(topic) == f"{topic!r} is not a valid MQTT topic filter"


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("events/\x00", "'events/\\x00' may not hold U+0000"),
        ("events/\udcff", "'events/\\udcff' is not UTF-8"),  # os.environ's reading of the byte 0xff
        ("events/" + "x" * 65_529, "is 65,536 bytes long: MQTT allows 65,535"),
        ("x" + "é" * 32_766 + "/#", None),  # 65,535 bytes: the longest a filter may be
    ],
)
def test_a_filter_paho_cannot_send_is_refused(topic: str, problem: str | None) -> None:
    # Before, the consumer's subscribe raised paho's ValueError at the first connection, after every other start.
    assert filter_problem(topic) == problem


def test_an_empty_filter_is_refused_and_the_message_quotes_the_filter_escaped() -> None:
    assert filter_problem("") == "may not be empty"
    # Quoted by repr: a control character shows in a log line as its escape, not as itself.
    assert filter_problem("a\x01#") == "'a\\x01#' is not a valid MQTT topic filter"
    assert filter_problem("a\n#") == "'a\\n#' is not a valid MQTT topic filter"


@pytest.mark.parametrize(
    ("topic", "group", "probe_topic", "interval_s"),
    [
        (TOPIC_FILTER, "", PROBE_TOPIC, 10.0),  # the defaults
        (TOPIC_FILTER, "ingest", PROBE_TOPIC, 10.0),
        (TOPIC_FILTER, "grupo-é space", PROBE_TOPIC, 10.0),
        ("#", "", "anything/at/all", 10.0),
        ("events/+", "", PROBE_TOPIC, 10.0),
        (TOPIC_FILTER, "", "events", 10.0),  # 'events/#' matches its parent level too
        ("events/shop/#", "", PROBE_TOPIC, 0.0),  # a narrow subscription with the probe off
        (TOPIC_FILTER, "", "events/#", 0.0),  # the probe off: its topic is never published to
    ],
)
def test_settings_that_work_have_no_problem(topic: str, group: str, probe_topic: str, interval_s: float) -> None:
    assert settings_problem(topic, group, probe_topic, interval_s) is None


@pytest.mark.parametrize(
    ("topic", "group", "probe_topic", "interval_s", "problem"),
    [
        ("", "", PROBE_TOPIC, 10.0, "EVENTPIPE_MQTT_TOPIC may not be empty"),
        (
            "events/#/more",
            "a/b",  # the topic is named first when both are wrong
            PROBE_TOPIC,
            10.0,
            "EVENTPIPE_MQTT_TOPIC 'events/#/more' is not a valid MQTT topic filter",
        ),
        ("events/a+b", "", PROBE_TOPIC, 0.0, "EVENTPIPE_MQTT_TOPIC 'events/a+b' is not a valid MQTT topic filter"),
        (TOPIC_FILTER, "a/b", PROBE_TOPIC, 10.0, "EVENTPIPE_MQTT_SHARE_GROUP 'a/b' may not contain '/', '+' or '#'"),
        (TOPIC_FILTER, "+", PROBE_TOPIC, 0.0, "EVENTPIPE_MQTT_SHARE_GROUP '+' may not contain '/', '+' or '#'"),
        (TOPIC_FILTER, "g#", PROBE_TOPIC, 0.0, "EVENTPIPE_MQTT_SHARE_GROUP 'g#' may not contain '/', '+' or '#'"),
        (
            TOPIC_FILTER,
            "",
            "events/+",
            10.0,
            "EVENTPIPE_PROBE_TOPIC 'events/+' is a topic to publish to: no '+' or '#'",
        ),
        (TOPIC_FILTER, "", "events/#", 0.5, "EVENTPIPE_PROBE_TOPIC 'events/#' is a topic to publish to: no '+' or '#'"),
        ("#", "", "a+b", 10.0, "EVENTPIPE_PROBE_TOPIC 'a+b' is a topic to publish to: no '+' or '#'"),
        (
            "events/shop/#",
            "",
            PROBE_TOPIC,
            10.0,
            "EVENTPIPE_PROBE_TOPIC 'events/_probe' is not under EVENTPIPE_MQTT_TOPIC 'events/shop/#'",
        ),
        (
            "events/+",
            "",
            "events/a/b",  # '+' is one level
            10.0,
            "EVENTPIPE_PROBE_TOPIC 'events/a/b' is not under EVENTPIPE_MQTT_TOPIC 'events/+'",
        ),
        (
            TOPIC_FILTER,
            "",
            "Events/_probe",  # topics are case-sensitive
            10.0,
            "EVENTPIPE_PROBE_TOPIC 'Events/_probe' is not under EVENTPIPE_MQTT_TOPIC 'events/#'",
        ),
        (
            "#",
            "",
            "$probe/x",  # a broker never delivers a '$' topic to a filter starting with a wildcard
            10.0,
            "EVENTPIPE_PROBE_TOPIC '$probe/x' is not under EVENTPIPE_MQTT_TOPIC '#'",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_variable(
    topic: str, group: str, probe_topic: str, interval_s: float, problem: str
) -> None:
    assert settings_problem(topic, group, probe_topic, interval_s) == problem


@pytest.mark.parametrize(
    "probe_topic",
    [
        "",  # under '#' by paho's matcher; 'Invalid topic.' at publish
        "events/\udcff",  # os.environ's reading of the byte 0xff; UnicodeEncodeError at publish
        "events/" + "x" * 65_529,  # 65,536 bytes; 'Publish topic is too long.' at publish
    ],
)
def test_a_probe_topic_the_worker_cannot_publish_to_is_refused(probe_topic: str) -> None:
    problem = settings_problem("#", "", probe_topic, 10.0)
    assert problem is not None and problem.startswith("EVENTPIPE_PROBE_TOPIC ")


@pytest.mark.parametrize(("group", "interval_s"), [("", 0.0), ("workers", 0.0), ("", 10.0)])
def test_a_shared_subscription_as_the_topic_is_refused_naming_the_group_variable(group: str, interval_s: float) -> None:
    # With a group, the worker subscribed to '$share/workers/$share/g/events/#'; with the probe on, the message
    # said the probe topic was not under the topic.
    problem = settings_problem("$share/g/events/#", group, "events/_probe", interval_s)
    assert problem == (
        "EVENTPIPE_MQTT_TOPIC '$share/g/events/#' is a shared subscription: put its group in EVENTPIPE_MQTT_SHARE_GROUP"
    )
