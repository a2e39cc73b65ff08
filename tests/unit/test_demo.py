"""Demo events look like real traffic and satisfy the contract."""

from __future__ import annotations

import json
import random
import time

from eventpipe.events import Event, Limits, parse
from eventpipe.producer.demo import EVENT_TYPES, demo_event


def test_demo_events_pass_the_contract_with_every_field() -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(500):
        event_type, payload = demo_event(rng)
        row = parse(f"events/{event_type}", json.dumps(payload).encode(), time.time_ns() // 1_000_000, Limits())
        assert isinstance(row, Event)
        assert row.event_type == event_type
        properties = json.loads(row.properties)
        assert {"page", "browser", "country", "device"} <= properties.keys()
        if event_type == "purchase":
            assert properties["amount"] > 0
        seen.add(event_type)
    assert seen == set(EVENT_TYPES)


def test_a_seed_repeats_the_same_events() -> None:
    assert demo_event(random.Random(3))[1]["event_id"] == demo_event(random.Random(3))[1]["event_id"]
