"""JSON for the hot path: payloads read with NaN and Infinity refused, properties written compactly.

`json.loads(text, parse_constant=...)` builds a decoder, and `json.dumps` with
these options an encoder, on every call; these are built once, because the
worker runs them on every message (events.contract).
"""

from __future__ import annotations

import json
from typing import Any


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_no_constants)
_scan = _decoder.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The C encoder made once, not per call as JSONEncoder.encode does, and without
# the circular-reference bookkeeping: what json parsing returns has no cycles.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode = (
    _c_make_encoder(None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    if _c_make_encoder is not None
    else None
)


def loads(text: str) -> Any:
    """json.loads with NaN and Infinity refused; scans directly when the text is one bare value."""
    try:
        body, end = _scan(text, 0)
    except StopIteration:
        body, end = None, -1
    if end != len(text):
        # Leading or trailing whitespace, extra data, or not JSON: the full
        # decoder accepts or refuses it exactly as json.loads would.
        return _decoder.decode(text)
    return body


# Characters JSON leaves raw in a string that some readers take for line breaks (Python's
# str.splitlines, JavaScript's line terminators): an NDJSON line of /export holding one was cut into
# several there. Escaped, each is the same JSON value; in valid JSON they can only be inside strings.
LINE_BREAKS = "\x85\u2028\u2029"
ESCAPED = str.maketrans({char: f"\\u{ord(char):04x}" for char in LINE_BREAKS})


def escaped(text: str) -> str:
    """`text` with LINE_BREAKS escaped: three scans, cheaper than translating every text for the rare one."""
    if "\u2028" in text or "\u2029" in text or "\x85" in text:
        return text.translate(ESCAPED)
    return text


def dumps(properties: dict[str, Any]) -> str:
    """Compact JSON, LINE_BREAKS escaped: as stored, which is as the API serves it, so that a page's bytes
    counted in ClickHouse from the stored size are its bytes (raw, 2 or 3 bytes became 6 as served: an
    8 MiB page was 24 MB, an attack)."""
    if _c_encode is None:
        return escaped(_encoder.encode(properties))
    return escaped("".join(_c_encode(properties, 0)))
