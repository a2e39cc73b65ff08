"""MQTT topic filters, checked as the broker would before a worker subscribes with one."""

from __future__ import annotations


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
