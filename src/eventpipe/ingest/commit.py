"""A batch committed to ClickHouse, before the worker acknowledges any of it (ingest.worker).

Each message is parsed against the contract into an event or a rejection. The
events go in in one insert; rows the table refuses join the rejections, which
go to dead_letters. Every write is retried until it succeeds (ingest.retry),
so when `commit` returns, the whole batch is stored.
"""

from __future__ import annotations

from typing import NamedTuple

from eventpipe.events import Event, Limits, Reason, Rejection, parse
from eventpipe.ingest.delivery import Delivery
from eventpipe.ingest.retry import Retrier
from eventpipe.store.writer import Writer


class Committed(NamedTuple):
    """What a batch became: its events (those the table refused among them), and its dead letters."""

    events: list[Event]
    refused: int
    rejections: list[Rejection]


def commit(batch: list[Delivery], limits: Limits, writer: Writer, retrier: Retrier) -> Committed:
    events: list[Event] = []
    sources: list[Delivery] = []
    rejections: list[Rejection] = []
    for delivery in batch:
        result = parse(delivery.topic, delivery.payload, delivery.received_ms, limits, delivery.size, delivery.digest)
        if type(result) is Event:
            events.append(result)
            sources.append(delivery)
        else:
            rejections.append(result)  # type: ignore[arg-type]

    refused = retrier.run(lambda isolate: writer.insert_events(events, isolate_unknown=isolate))
    for index, detail in refused:
        source = sources[index]
        rejections.append(
            Rejection(
                source.topic,
                source.payload[: limits.max_payload_bytes],
                source.size,
                source.received_ms,
                Reason.STORAGE_REJECTED,
                detail[:1000],
            )
        )
    if rejections:
        retrier.run(lambda _isolate: writer.insert_dead_letters(rejections), isolating=False)
    return Committed(events, len(refused), rejections)
