"""Read queries: health and counts. Counts are of distinct ids, so redeliveries never show twice."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from eventpipe.events import PROBE_EVENT_TYPE
from eventpipe.store.client import ping
from eventpipe.store.failure import classified


class Reader:
    def __init__(self, client: Client) -> None:
        self._client = client

    def ping(self) -> bool:
        """True when ClickHouse answers a query."""
        return ping(self._client)

    def count_events(self) -> int:
        """Events as users see them: each id once, eventpipe's own probes left out.

        Distinct ids rather than FINAL alone: a redelivered event without a
        timestamp gets another receive time, and across a month boundary its
        copies sit in two partitions, which merges never collapse."""
        return self._scalar(
            "SELECT uniqExact(event_id) FROM events WHERE event_type != {probe:String}", {"probe": PROBE_EVENT_TYPE}
        )

    def count_dead_letters(self) -> int:
        return self._scalar("SELECT uniqExact(dead_letter_id) FROM dead_letters")

    def dead_letter_reasons(self) -> dict[str, int]:
        rows = self._rows("SELECT reason, uniqExact(dead_letter_id) FROM dead_letters GROUP BY reason ORDER BY reason")
        return {str(reason): int(str(count)) for reason, count in rows}

    def _scalar(self, sql: str, parameters: dict[str, object] | None = None) -> int:
        return int(str(self._rows(sql, parameters)[0][0]))

    def _rows(self, sql: str, parameters: dict[str, object] | None = None) -> list[tuple[object, ...]]:
        with classified():
            return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]
