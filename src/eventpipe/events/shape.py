"""The shape of parsed JSON, pure: how deep it nests, and what JSON calls a value."""

from __future__ import annotations

from typing import Any


def depth(node: object) -> int:
    """How deep `node` nests: 0 for a scalar, 1 for an object or array of scalars; walked with a stack of
    its own, not by recursion, whatever the payload's depth."""
    deepest = 0
    stack: list[tuple[object, int]] = [(node, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def json_kind(value: object) -> str:
    """What JSON calls a parsed value that is not an object."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"
