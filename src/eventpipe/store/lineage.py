"""Which erased users a backup holds again though they were erased before it was taken.

A backup holds the store as it was when taken, every erasure made before then
applied, but for a store that a restore had brought back before the backup was
taken: that one held again the users erased between the restored backup's time
and that restore, unless they were erased again after it. A restore counted the
erasures since the backup's time only, and so said nothing when it brought back
the backup of what an earlier restore replaced, taken after that restore (found
by an attack: a user erased before both came back, unsaid).

`returned` is pure; Backups reads its inputs from the tables every restore keeps
(migration.KEPT): the catalog's times, the restores and the erasure audit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# The restores that finished, oldest first: when each finished and the backup it brought back.
FINISHED_RESTORES = (
    "SELECT toUnixTimestamp64Milli(restored_at), backup FROM restores WHERE finished ORDER BY restored_at"
)
# The erasures the audit records from a moment on: when, and the user's keyed hash.
ERASURES_SINCE = (
    "SELECT toUnixTimestamp64Milli(erased_at), user_hash FROM erasures"
    " WHERE erased_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')"
)
# Restores within restores are followed this deep at most: each step goes back in time, so only a store
# restored hundreds of times over could need more, and what lies further back is then left out.
MAX_DEPTH = 100


def returned(
    name: str,
    taken_ms: Callable[[str], int],
    restores: Sequence[tuple[int, str]],
    erasures: Sequence[tuple[int, str]],
) -> set[str]:
    """The user hashes of erasures made before backup `name` was taken that its data holds again.

    `taken_ms` gives a backup's time; `restores` are (finished, backup) of the restores that finished,
    `erasures` (erased, user hash) of the audit, both in epoch ms and covering every time the chain of
    restores behind `name` goes back to (`earliest` says which)."""
    held: set[str] = set()
    chain = _chain(name, taken_ms, restores)
    # From the oldest restore on: what it brought back, less what was erased again before the next backup.
    for source, restored_ms, until_ms in reversed(chain):
        held |= {user for at, user in erasures if taken_ms(source) <= at < restored_ms}
        held -= {user for at, user in erasures if restored_ms <= at < until_ms}
    return held


def earliest(name: str, taken_ms: Callable[[str], int], restores: Sequence[tuple[int, str]]) -> int:
    """The oldest time the chain of restores behind backup `name` reaches: erasures from then on matter."""
    chain = _chain(name, taken_ms, restores)
    return min([taken_ms(name), *(taken_ms(source) for source, _restored, _until in chain)])


def _chain(
    name: str, taken_ms: Callable[[str], int], restores: Sequence[tuple[int, str]]
) -> list[tuple[str, int, int]]:
    """(restored backup, when its restore finished, when the next backup in the chain was taken), newest
    first: the restore each backup's store came from, the last one before that backup was taken."""
    chain: list[tuple[str, int, int]] = []
    until = taken_ms(name)
    for _ in range(MAX_DEPTH):
        earlier = [(at, backup) for at, backup in restores if at < until]
        if not earlier:
            break
        restored_ms, source = max(earlier)
        if taken_ms(source) >= restored_ms:  # a backup named as if taken after its own restore: no lineage
            break
        chain.append((source, restored_ms, until))
        until = taken_ms(source)
    return chain
