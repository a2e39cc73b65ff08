"""MQTT topic filters, checked as the broker would before a worker subscribes with one."""

from __future__ import annotations

from paho.mqtt.client import topic_matches_sub


def filter_problem(topic: str) -> str | None:
    """Why `topic` is no MQTT topic filter ('#' only as the whole last level, '+' only as a whole level,
    not empty), said after its name; None when it is one."""
    if not topic:
        return "may not be empty"
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
            return f"{topic!r} is not a valid MQTT topic filter"
    return None


def settings_problem(topic: str, share_group: str, probe_topic: str, probe_interval_s: float) -> str | None:
    """What is wrong with the worker's topic settings, naming the variable to fix; None when nothing is."""
    found = filter_problem(topic)
    if found is not None:
        return f"EVENTPIPE_MQTT_TOPIC {found}"
    if any(char in share_group for char in "/+#"):
        return f"EVENTPIPE_MQTT_SHARE_GROUP {share_group!r} may not contain '/', '+' or '#'"
    if probe_interval_s > 0 and any(char in probe_topic for char in "+#"):
        # A filter, not a topic: the probe thread died at its first publish, and freshness went blind.
        return f"EVENTPIPE_PROBE_TOPIC {probe_topic!r} is a topic to publish to: no '+' or '#'"
    if probe_interval_s > 0 and not topic_matches_sub(topic, probe_topic):
        # A probe the worker never receives would report the pipe stalled forever.
        return f"EVENTPIPE_PROBE_TOPIC {probe_topic!r} is not under EVENTPIPE_MQTT_TOPIC {topic!r}"
    return None
