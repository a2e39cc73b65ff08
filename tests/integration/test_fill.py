"""`eventpipe bench fill`'s inserts, several batches in flight at once, against the engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import clickhouse_connect
import pytest

from eventpipe.bench.fill import batches, insert_all
from eventpipe.errors import StorageError

COUNTS = "SELECT count(), uniqExact(event_id), (SELECT count() FROM events_by_user) FROM events"


def test_every_batch_is_stored_once_whatever_order_they_end_in(client: clickhouse_connect.driver.Client) -> None:
    """Batches go in side by side: each event must still land once, in `events` and in its views."""
    stored = insert_all(client, batches(8_003, 1_800_000_000_000, batch=1_000))
    assert stored == 8_003
    assert client.query(COUNTS).result_rows == [(8_003, 8_003, 8_003)]


def test_a_failing_batch_stops_the_fill_after_the_batches_begun_end_whole(
    client: clickhouse_connect.driver.Client,
) -> None:
    """A batch the store refuses fails the fill. The batches before it and the one begun beside it end
    whole (events and events_by_user agree), and the fill makes no more once it has learnt of it."""
    made: list[int] = []

    def columns() -> Iterator[list[Sequence[object]]]:
        for number, batch in enumerate(batches(10_000, 1_800_000_000_000, batch=1_000)):
            made.append(number)
            if number == 3:
                batch[2] = ["not a time"] * len(batch[2])
            yield batch

    with pytest.raises(StorageError):
        insert_all(client, columns())
    [(stored, unique, by_user)] = client.query(COUNTS).result_rows
    assert stored in (3_000, 4_000) and stored == unique == by_user
    assert made == [0, 1, 2, 3, 4, 5], "two batches in flight and one made ahead, none after the failure"
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("fill")], "no insert runs on"
