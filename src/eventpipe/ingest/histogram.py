"""A histogram fed a batch at a time: the hot path cannot afford a locked observe() per event."""

from __future__ import annotations

import itertools
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector


class BatchHistogram(Collector):
    """Cumulative buckets like prometheus_client's Histogram, updated once per batch under one lock."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Observe `values`, each below 0 as 0: a negative value would lower the sum, which Prometheus takes
        for a reset. Sorted, then cut at each bound: in C, not a Python step per value (a batch's delays
        come nearly in order, which sorts in one pass)."""
        ordered = sorted(values)
        # How many are at most each bound, as the cumulative buckets count them; none below a negative one.
        at_most = [bisect_right(ordered, bound) if bound >= 0 else 0 for bound in self._bounds]
        at_most.append(len(ordered))
        counts = [at_most[0]] + [high - low for low, high in itertools.pairwise(at_most)]
        total = sum(ordered[bisect_right(ordered, 0.0) :])
        with self._lock:
            for index, count in enumerate(counts):
                self._counts[index] += count
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric([], buckets, total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation)
