"""What the migrations read of ClickHouse's own tables: one column of a table's row in system.tables,
and the names a condition picks out of system.tables or system.columns."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

# The columns of system.tables the migrations read, checked before one is
# spliced into a query.
CATALOG = frozenset({"comment", "create_table_query", "engine_full", "sorting_key", "uuid"})


def catalog(client: Client, table: str, column: str) -> str:
    """One column of `table`'s row in system.tables; empty if there is no such table."""
    if column not in CATALOG:
        raise ValueError(f"not a column the migrations read: {column!r}")
    sql = f"SELECT {column} FROM system.tables WHERE database = currentDatabase() AND name = {{t:String}}"  # noqa: S608
    found = client.query(sql, parameters={"t": table}).result_rows
    return str(found[0][0]) if found else ""


def names(source: str, condition: str, value: str, client: Client) -> set[str]:
    sql = f"SELECT name FROM {source} WHERE database = currentDatabase() AND {condition}"  # noqa: S608 - constants
    return {str(row[0]) for row in client.query(sql, parameters={"t": value}).result_rows}
