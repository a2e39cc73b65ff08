"""The embedded engine runs its merges below the worker's inserts and the API's reads (store.client.MERGE_NICE).

In a process of its own: chDB starts one engine per process, with the options of its first connection,
and this one must be `connect()`'s own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eventpipe.store.client import MERGE_NICE

CAP_SYS_NICE = 23
# Parts enough that background merges run for a while, each long enough to be seen in /proc.
WATCH = """
import json, os, sys, threading, time
from collections import Counter
from eventpipe.store.client import connect

client = connect("chdb://" + sys.argv[1])
client.command("CREATE TABLE t (a UInt64, s String) ENGINE = MergeTree ORDER BY a")
running, stop = Counter(), threading.Event()

def watch():
    while not stop.is_set():
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/comm") as comm, open(f"/proc/self/task/{task}/stat") as stat:
                    name, fields = comm.read().strip(), stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a thread that ended meanwhile
            if name.startswith("MergeMutate") and fields[0] == "R":
                running[fields[16]] += 1
        time.sleep(0.001)

watcher = threading.Thread(target=watch)
watcher.start()
for part in range(40):
    client.command(f"INSERT INTO t SELECT number, toString(number) FROM numbers({part * 200_000}, 200_000)")
deadline = time.monotonic() + 20
while time.monotonic() < deadline and int(client.command("SELECT count() FROM system.merges")) > 0:
    time.sleep(0.05)
stop.set()
watcher.join()
print(json.dumps(dict(running)))
"""


def _may_set_priorities() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    return False


@pytest.mark.skipif(not _may_set_priorities(), reason="ClickHouse sets nice values only with CAP_SYS_NICE")
def test_merges_run_at_the_lower_priority(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WATCH, str(tmp_path / "store")], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    running = {int(nice): seen for nice, seen in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    # Merging, a thread runs at MERGE_NICE; between two merges it is back at 0 for a moment.
    assert running.get(MERGE_NICE, 0) > running.get(0, 0), f"merge threads seen running by nice value: {running}"
