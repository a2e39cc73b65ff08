"""MQTT topic filters, checked as the broker would before a worker subscribes with one."""

from __future__ import annotations

from paho.mqtt.client import topic_matches_sub

# MQTT's strings are UTF-8 of at most 65,535 bytes, without U+0000 (MQTT 5.0, 1.5.4): paho refuses to send
# any other, with a ValueError or a UnicodeEncodeError.
MAX_TOPIC_BYTES = 65_535


def _string_problem(topic: str) -> str | None:
    if not topic:
        return "may not be empty"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:  # a byte of the environment that is no UTF-8 reaches Python as a lone surrogate
        return f"{_shown(topic)} is not UTF-8"
    if size > MAX_TOPIC_BYTES:
        return f"is {size:,} bytes long: MQTT allows {MAX_TOPIC_BYTES:,}"
    if "\x00" in topic:
        return f"{_shown(topic)} may not hold U+0000"
    return None


def _shown(topic: str) -> str:
    # A topic may be 64 KiB: quoted whole, it filled the start's error.
    return repr(topic) if len(topic) <= 200 else f"{topic[:200]!r}... ({len(topic):,} characters)"


def filter_problem(topic: str) -> str | None:
    """Why `topic` is no MQTT topic filter ('#' only as the whole last level, '+' only as a whole level,
    not empty, UTF-8 of at most 65,535 bytes), said after its name; None when it is one."""
    found = _string_problem(topic)
    if found is not None:
        return found
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
    if topic.startswith("$share/"):
        # The worker adds the group itself: '$share/g/$share/h/events/#' matches no topic, and the worker hears nothing.
        return f"EVENTPIPE_MQTT_TOPIC {topic!r} is a shared subscription: put its group in EVENTPIPE_MQTT_SHARE_GROUP"
    if any(char in share_group for char in "/+#"):
        return f"EVENTPIPE_MQTT_SHARE_GROUP {share_group!r} may not contain '/', '+' or '#'"
    # A topic the worker cannot publish to: the probe thread died at its first publish, and freshness went blind.
    found = _string_problem(probe_topic) if probe_interval_s > 0 else None
    if found is not None:
        return f"EVENTPIPE_PROBE_TOPIC {found}"
    if probe_interval_s > 0 and any(char in probe_topic for char in "+#"):
        # A filter, not a topic: the same death.
        return f"EVENTPIPE_PROBE_TOPIC {probe_topic!r} is a topic to publish to: no '+' or '#'"
    if probe_interval_s > 0 and not topic_matches_sub(topic, probe_topic):
        # A probe the worker never receives would report the pipe stalled forever.
        return f"EVENTPIPE_PROBE_TOPIC {probe_topic!r} is not under EVENTPIPE_MQTT_TOPIC {topic!r}"
    return None
