"""Realistic demo events, from a seeded random source so runs can be repeated."""

from __future__ import annotations

import random
from bisect import bisect_right
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

EVENT_TYPES = ("page_view", "click", "purchase", "login", "form_submit")
# Rough shape of a web shop's traffic: many views, few purchases.
WEIGHTS = (50, 25, 5, 10, 10)
PAGES = ("/", "/products", "/products/42", "/cart", "/checkout", "/login", "/signup", "/blog/launch")
BROWSERS = ("chrome", "firefox", "safari", "edge")
COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR", "JP", "NG")
DEVICES = ("desktop", "mobile", "tablet")
_CUMULATIVE = tuple(accumulate(WEIGHTS))


def _uuid4(bits: int) -> str:
    # uuid.UUID(int=..., version=4) costs several microseconds; this is the same string.
    bits = (bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def demo_event(rng: random.Random, now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """Return (event_type, payload) for one plausible web event."""
    moment = now or datetime.now(UTC)
    event_type = EVENT_TYPES[bisect_right(_CUMULATIVE, rng.random() * _CUMULATIVE[-1])]
    payload: dict[str, Any] = {
        "event_id": _uuid4(rng.getrandbits(128)),
        "event_type": event_type,
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user_id": f"user-{rng.randrange(1, 5000):04d}",
        "page": rng.choice(PAGES),
        "browser": rng.choice(BROWSERS),
        "country": rng.choice(COUNTRIES),
        "device": rng.choice(DEVICES),
    }
    if event_type == "purchase":
        payload["amount"] = round(rng.uniform(2, 400), 2)
        payload["currency"] = "EUR"
    elif event_type == "click":
        payload["element"] = rng.choice(("buy-button", "nav-home", "banner", "search"))
    elif event_type == "login":
        payload["success"] = rng.random() > 0.1
    elif event_type == "form_submit":
        payload["form"] = rng.choice(("signup", "newsletter", "contact"))
    return event_type, payload
