"""Two migrators in one table rebuild (swap.rebuild_table, as migration 3 and 5 run it) at the worst moment."""

from __future__ import annotations

import threading
from typing import Any

import clickhouse_connect

from eventpipe.errors import HaltStorageError
from eventpipe.store.client import connect
from eventpipe.store.schema.version import Rebuild
from eventpipe.store.swap import rebuild_table, rebuilt

WAIT_S = 20
RACE = Rebuild(
    table="race",
    create="CREATE TABLE {table} (id UInt32, n UInt32) ENGINE = ReplacingMergeTree ORDER BY (n, id)",
    marker="n, id",
    sorting_key=True,
)


class Hooked:
    """The real client, with a call before and after each statement that starts with one of `hooks`' keys."""

    def __init__(self, client: clickhouse_connect.driver.Client, hooks: dict[str, tuple[Any, Any]]) -> None:
        self._client, self._hooks = client, hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        before, after = next((hook for start, hook in self._hooks.items() if sql.startswith(start)), (None, None))
        if before:
            before()
        answer = self._client.command(sql, *args, **kwargs)
        if after:
            after()
        return answer


def test_a_second_migrator_cannot_swap_the_old_table_back_under_a_ledger_that_says_done(clickhouse_dsn: str) -> None:
    client = connect(clickhouse_dsn)
    client.command("CREATE TABLE race (id UInt32, n UInt32) ENGINE = MergeTree ORDER BY id")
    client.command("INSERT INTO race SELECT number, number % 7 FROM numbers(100)")
    b_ready, a_swapped, b_swapped = threading.Event(), threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def run(who: str, migrator: Hooked) -> None:
        try:
            rebuild_table(migrator, RACE)  # type: ignore[arg-type]
            outcome[who] = "done"
        except HaltStorageError as exc:
            outcome[who] = str(exc)
        finally:
            (a_swapped if who == "A" else b_swapped).set()  # a migrator that stopped lets the other go on

    # B drops A's finished copy and makes its own; A swaps; B swaps right after, before A's second copy.
    b = Hooked(connect(clickhouse_dsn), {"EXCHANGE": (lambda: b_ready.set() or a_swapped.wait(WAIT_S), None)})
    second = threading.Thread(target=run, args=("B", b))

    def start_b() -> None:
        second.start()
        b_ready.wait(WAIT_S)

    def wait_for_b() -> None:
        a_swapped.set()
        b_swapped.wait(WAIT_S)

    a = Hooked(connect(clickhouse_dsn), {"INSERT INTO race_rebuild": (None, start_b), "EXCHANGE": (None, wait_for_b)})
    run("A", a)
    second.join(WAIT_S)
    assert set(outcome) == {"A", "B"}
    done = [who for who, said in outcome.items() if said == "done"]
    # Each said done over the old definition, and a rerun saw nothing to do.
    assert rebuilt(client, RACE) or not done, f"{done} finished, and race is on its old definition"
    assert any("another migrator" in said for said in outcome.values()), outcome
    rebuild_table(client, RACE)  # the rerun the message asks for
    assert rebuilt(client, RACE)
    assert client.command("SELECT count() FROM race FINAL") == 100
    assert "race_rebuild" not in {row[0] for row in client.query("SHOW TABLES").result_rows}
