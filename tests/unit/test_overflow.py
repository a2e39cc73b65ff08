"""What waits while the worker is full: offered in order, stale copies let go, bounded by the byte budget."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from eventpipe.ingest.delivery import Delivery
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.overflow import Waiting

TOPIC = "events/x"  # 8 bytes


def message(mid: int, qos: int = 1, generation: int = 1, size: int = 92) -> Delivery:
    payload = b"x" * size
    return Delivery(mid, qos, TOPIC, payload, received_ms=mid, arrived=0.0, generation=generation, size=size)


class Worker:
    """Takes up to `room` messages, like the worker's window."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.taken: list[Delivery] = []
        self.empty_offers = 0

    def __call__(self, waiting: list[Delivery]) -> int:
        if not waiting:
            self.empty_offers += 1
        count = min(self.room, len(waiting))
        self.room -= count
        self.taken.extend(waiting[:count])
        return count


def waiting(worker: Worker, max_bytes: int = 10_000) -> tuple[Waiting, IngestMetrics]:
    metrics = IngestMetrics(CollectorRegistry())
    return Waiting(worker, max_bytes, metrics), metrics


def dropped(metrics: IngestMetrics) -> float:
    return metrics.dropped._value.get()


def test_what_the_worker_has_no_room_for_waits_and_goes_in_order_once_room_comes() -> None:
    worker = Worker(room=3)
    rest, _ = waiting(worker)
    rest.add([message(i) for i in range(5)])
    assert [item.mid for item in worker.taken] == [0, 1, 2]
    assert len(rest) == 2 and rest.holds_from(1) and not rest.holds_from(2)
    rest.add([message(5)])
    assert len(rest) == 3
    worker.room = 10
    rest.offer()
    assert [item.mid for item in worker.taken] == [0, 1, 2, 3, 4, 5]
    assert len(rest) == 0 and not rest.holds_from(1)


def test_a_new_connection_is_read_while_only_older_messages_wait() -> None:
    rest, _ = waiting(Worker(room=0))
    rest.add([message(1, generation=1)])
    assert rest.holds_from(1)
    assert not rest.holds_from(2)  # CONNACK and SUBACK of connection 2 must be read
    rest.add([message(2, generation=2)])
    assert rest.holds_from(2)


def test_a_resumed_session_lets_go_of_older_qos_1_copies_and_keeps_qos_0() -> None:
    worker = Worker(room=0)
    rest, metrics = waiting(worker)
    rest.add([message(1, qos=1, generation=1), message(2, qos=0, generation=1), message(3, qos=1, generation=2)])
    rest.let_go(2)
    worker.room = 10
    rest.offer()
    assert [item.mid for item in worker.taken] == [2, 3]
    assert dropped(metrics) == 0  # copies the broker resends: not dropped


def test_letting_go_of_all_tells_the_worker_nothing_waits() -> None:
    # Its marks wait for what is being handed over; with nothing left they must not wait for ever.
    worker = Worker(room=0)
    rest, _ = waiting(worker)
    rest.add([message(1, generation=1)])
    rest.let_go(2)
    assert len(rest) == 0 and worker.empty_offers == 1


@pytest.mark.parametrize(
    ("first_qos", "kept"),
    [(0, [4, 5, 6, 7, *range(100, 106)]), (1, [*range(8), 104, 105])],
    ids=["QoS 0 waiting", "QoS 1 waiting"],
)
def test_past_the_budget_the_oldest_qos_0_goes_counted_and_qos_1_never(first_qos: int, kept: list[int]) -> None:
    # 100 bytes each (92 of payload, 8 of topic): a budget of 1,000 holds 10.
    worker = Worker(room=0)
    rest, metrics = waiting(worker, max_bytes=1_000)
    rest.add([message(i, qos=first_qos) for i in range(8)])
    assert dropped(metrics) == 0
    rest.add([message(100 + i, qos=0, generation=2) for i in range(6)])  # 1,400 bytes: 400 over
    assert dropped(metrics) == 4 and len(rest) == 10
    worker.room = 100
    rest.offer()
    assert [item.mid for item in worker.taken] == kept


def test_qos_1_alone_is_never_dropped_whatever_it_costs() -> None:
    rest, metrics = waiting(Worker(room=0), max_bytes=1_000)
    rest.add([message(i, qos=1) for i in range(30)])
    assert len(rest) == 30 and dropped(metrics) == 0


def test_the_gauges_say_what_waits_after_every_change() -> None:
    # 100 bytes each (92 of payload, 8 of topic).
    worker = Worker(room=1)
    rest, metrics = waiting(worker)

    def gauges() -> tuple[float, float]:
        return metrics.waiting._value.get(), metrics.waiting_bytes._value.get()

    rest.add([message(i) for i in range(4)])
    assert gauges() == (3, 300)
    worker.room = 2
    rest.offer()
    assert gauges() == (1, 100)
    rest.let_go(2)  # a QoS 1 copy of connection 1: the resumed session resends it
    assert gauges() == (0, 0)
