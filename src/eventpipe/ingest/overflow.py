"""Messages received that the worker has no room for yet: the most the valve lets in while the worker is full."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from eventpipe.ingest.delivery import Delivery, held_size
from eventpipe.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)


class Waiting:
    """In receive order, on paho's network thread only. `deliver` takes what the worker has room for and says
    how many; while messages of the live connection wait, the valve reads nothing (eventpipe.mqtt.valve)."""

    def __init__(self, deliver: Callable[[list[Delivery]], int], max_bytes: int, metrics: IngestMetrics) -> None:
        self._deliver = deliver
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._items: list[Delivery] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(list(self._items))

    def add(self, items: list[Delivery], *, offer: bool = True) -> None:
        """A read's messages: offered at once (unless `offer` is false), what is left kept within the budget."""
        self._items.extend(items)
        if offer:
            self.offer()  # counts: on the hot path, the gauges are set once a read
        if self._items:  # only when the worker is full: then it is one read long, or more after closes
            self._bound()
            self._count()

    def offer(self) -> None:
        """Hand the worker what waits, in order, as far as it has room."""
        if self._items:
            del self._items[: self._deliver(self._items)]
            self._count()

    def holds_from(self, generation: int) -> bool:
        """Whether messages of this connection wait: the valve stays shut. Only of the live one, so that a new
        connection's CONNACK and SUBACK are read (and stale copies let go) while older ones wait."""
        items = self._items
        return bool(items) and items[-1].generation == generation

    def let_go(self, generation: int) -> None:
        """Drop waiting QoS 1 copies of connections before `generation`, which the resumed session resends;
        never handed to the worker, so no counter has them."""
        kept = [item for item in self._items if item.generation >= generation or item.qos == 0]
        if len(kept) < len(self._items):
            log.info("let go of %d waiting messages of an earlier connection", len(self._items) - len(kept))
            self._items = kept
            self._count()
            if not kept:
                self._deliver([])  # nothing waits now: the worker's marks need not wait for it

    def _count(self) -> None:
        """The gauges, after every change: a worker that stays full shows as messages that keep waiting."""
        self._metrics.waiting.set(len(self._items))
        self._metrics.waiting_bytes.set(sum([held_size(item) for item in self._items]))

    def _bound(self) -> None:
        """Keep what waits within EVENTPIPE_MAX_HELD_BYTES: normally one read does, but each close the valve
        reads to its end adds what the broker sent before it, and a broker closing again and again while the
        store is down grew it by 5 MB in 30 closes. The oldest QoS 0 goes, counted;
        QoS 1 stays (after a lost session it is the only copy), bounded by the broker's window."""
        sizes = [held_size(item) for item in self._items]
        over = sum(sizes) - self._max_bytes
        if over <= 0:
            return
        kept: list[Delivery] = []
        for item, size in zip(self._items, sizes, strict=True):
            if over > 0 and item.qos == 0:
                over -= size
            else:
                kept.append(item)
        dropped = len(self._items) - len(kept)
        if dropped:
            self._items = kept
            self._metrics.dropped.inc(dropped)
            log.warning(
                "let go of %d QoS 0 messages waiting while the worker is full: more than EVENTPIPE_MAX_HELD_BYTES "
                "waited, read from connections the broker closed meanwhile",
                dropped,
            )
