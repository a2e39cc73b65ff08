"""Read queries: health and counts. Reads use FINAL so redeliveries never show twice."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from eventpipe.errors import StorageError
from eventpipe.events import PROBE_EVENT_TYPE
from eventpipe.store.failure import classify


class Reader:
    def __init__(self, client: Client) -> None:
        self._client = client

    def ping(self) -> bool:
        """True when ClickHouse answers a query."""
        try:
            return self._client.command("SELECT 1") == 1
        except Exception:  # noqa: BLE001 - any failure means not ready; the caller reports it
            return False

    def count_events(self) -> int:
        """Events as users see them: eventpipe's own probes left out."""
        return self._scalar(
            "SELECT count() FROM events FINAL WHERE event_type != {probe:String}", {"probe": PROBE_EVENT_TYPE}
        )

    def count_dead_letters(self) -> int:
        return self._scalar("SELECT count() FROM dead_letters FINAL")

    def dead_letter_reasons(self) -> dict[str, int]:
        rows = self._rows("SELECT reason, count() FROM dead_letters FINAL GROUP BY reason ORDER BY reason")
        return {str(reason): int(str(count)) for reason, count in rows}

    def _scalar(self, sql: str, parameters: dict[str, object] | None = None) -> int:
        return int(str(self._rows(sql, parameters)[0][0]))

    def _rows(self, sql: str, parameters: dict[str, object] | None = None) -> list[tuple[object, ...]]:
        try:
            return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]
        except StorageError:
            raise
        except Exception as exc:
            raise classify(exc) from exc
