"""What one version of the schema is: its statements, the tables it rebuilds, and how its views write."""

from __future__ import annotations

from dataclasses import dataclass

# The scratch table a Rebuild or a Refill copies into is named after its table
# with these endings (store.erasure waits while one exists).
REBUILT, REFILLED = "_rebuild", "_refill"


@dataclass(frozen=True)
class Rebuild:
    """Recreate a table under a new definition (ClickHouse cannot ALTER an engine) and copy its rows.

    `create` names the table {table}; the step is done once `marker` is one of
    the table's columns (or, with `sorting_key`, once the table is sorted by
    `marker`), so a rerun after a crash at any point is safe."""

    table: str
    create: str
    marker: str
    sorting_key: bool = False
    # Copy what FINAL shows, not every stored row: for a new sort key under
    # which copies the old key collapsed would no longer meet.
    collapse: bool = False


@dataclass(frozen=True)
class Refill:
    """Recreate a table a materialized view of `events` feeds, under a new definition, and fill it again
    from `events` while a second view keeps it current: workers may go on writing meanwhile.

    `create` names the table {table}; `rows` is the view's SELECT from
    `source`, ending in a WHERE clause; `view` is the view that feeds the new
    table, and `replaces` the one it takes over from. The swap is done once
    `marker` is in the table's engine definition, so a rerun after a crash at
    any point is safe. One migrator at a time (store.swap.refill_table)."""

    table: str
    create: str
    rows: str
    view: str
    replaces: str
    marker: str
    source: str = "events"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...] = ()
    rebuilds: tuple[Rebuild, ...] = ()
    refills: tuple[Refill, ...] = ()


# Explicit, not the server's default: the worker only has INSERT on events,
# and the views write on with the rights of whoever created them (the migrator).
DEFINER = "DEFINER = CURRENT_USER SQL SECURITY DEFINER"
