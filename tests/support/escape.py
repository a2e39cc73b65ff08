"""A JSON string literal spelt at random in the ways JSON allows, as producers' encoders differ."""

from __future__ import annotations

import json
import random


def escaped(text: str, rng: random.Random) -> str:
    """`text` as a JSON string literal, each character as itself (where JSON allows) or escaped, at random."""
    out = []
    for ch in text:
        units = ch.encode("utf-16-be")
        spelled = "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))
        options = [json.dumps(ch)[1:-1], spelled, spelled.upper().replace("\\U", "\\u")]
        if ch not in '"\\' and ord(ch) >= 0x20:
            options.append(ch)
        out.append(rng.choice(options))
    return '"' + "".join(out) + '"'
