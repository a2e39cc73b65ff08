"""Fresh block numbers for restored parts, so that the deletes after a restore reach them.

RESTORE gives a restored part new block numbers but keeps the mutation number
it had when backed up (`202609_1_1_1_11`: block 1, mutated up to 11). The
restored table numbers its next mutations from its highest block (4 here), and
ClickHouse takes a part whose number is past a mutation's as already mutated:
an erasure's deletes (and a migration's) were marked done and deleted nothing,
until the server restarted and counted the mutation numbers too. Replacing a
partition by itself (ClickHouse's own test 00626 does) clones its parts under
new block numbers with no mutation number, hard-linked, without rewriting data.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from eventpipe.store.failure import classified
from eventpipe.store.query import quoted

# The partitions holding a mutated part: run straight after a restore, every one of them is a part
# numbered past the table's count (a part mutated later carries a number the table has reached).
MARKED = (
    "SELECT DISTINCT table, partition_id FROM system.parts WHERE database = currentDatabase()"
    " AND active AND table IN {tables:Array(String)} AND data_version > max_block_number"
    " ORDER BY table, partition_id"
)


def renumber(client: Client, tables: list[str]) -> int:
    """Give every restored part of `tables` numbers past the table's own; how many partitions moved."""
    with classified():
        marked = client.query(MARKED, parameters={"tables": tables}).result_rows
        for table, partition in marked:
            # Names from the server's catalogue; the partition's id is a bound parameter.
            name = quoted(str(table))
            client.command(
                f"ALTER TABLE {name} REPLACE PARTITION ID {{p:String}} FROM {name}", parameters={"p": partition}
            )
    return len(marked)
