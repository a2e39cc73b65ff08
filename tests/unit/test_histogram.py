"""BatchHistogram counts a batch as prometheus_client's Histogram counts the same values one at a time."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from eventpipe.ingest.histogram import BatchHistogram

BUCKETS = (0.005, 0.05, 0.5, 1.0, 5.0, 60.0)


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    return {
        f"{sample.name}{sample.labels.get('le', '')}": sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith(name) and not sample.name.endswith("_created")
    }


def test_a_batch_lands_in_the_buckets_one_observe_each_would_and_below_zero_counts_as_zero() -> None:
    rng = random.Random(3)
    # Bounds themselves (a value equal to its bound is in it), values past the last bound, and negatives.
    values = [*BUCKETS, 0.0, -0.002, -7.0, 61.0, 1e9] + [rng.uniform(-1, 70) for _ in range(500)]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("delay_seconds", "d", BUCKETS, ours)
    single = Histogram("delay_seconds", "d", buckets=BUCKETS, registry=theirs)
    batch.observe_many(values[:200])
    batch.observe_many(values[200:])
    batch.observe_many([])
    for value in values:
        single.observe(max(0.0, value))
    got, want = _samples(ours, "delay_seconds"), _samples(theirs, "delay_seconds")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-6, key
