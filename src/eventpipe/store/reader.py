"""Read queries: health and counts. Reads use FINAL so redeliveries never show twice."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from eventpipe.errors import StorageError
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
        return self._scalar("SELECT count() FROM events FINAL")

    def count_dead_letters(self) -> int:
        return self._scalar("SELECT count() FROM dead_letters FINAL")

    def dead_letter_reasons(self) -> dict[str, int]:
        rows = self._rows("SELECT reason, count() FROM dead_letters FINAL GROUP BY reason ORDER BY reason")
        return {str(reason): int(str(count)) for reason, count in rows}

    def _scalar(self, sql: str) -> int:
        return int(str(self._rows(sql)[0][0]))

    def _rows(self, sql: str) -> list[tuple[object, ...]]:
        try:
            return [tuple(row) for row in self._client.query(sql).result_rows]
        except StorageError:
            raise
        except Exception as exc:
            raise classify(exc) from exc
