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
# When a backup may have been taken: (earliest, latest) in epoch ms. Exact from the catalog; from its name
# alone, within the second the name gives (a redo run straight after a restore falls in that restore's
# second: a review).
Taken = Callable[[str], tuple[int, int]]


def returned(
    name: str,
    taken: Taken,
    restores: Sequence[tuple[int, str]],
    erasures: Sequence[tuple[int, str]],
) -> set[str]:
    """The user hashes of erasures made before backup `name` was taken that its data may hold again.

    `restores` are (finished, backup) of the restores that finished, `erasures` (erased, user hash) of the
    audit, in epoch ms, covering every time the restores behind `name` go back to (`earliest` says which).
    Where a time is known to the second only, every restore the backup may come after is followed: a user
    reported twice costs an erasure run again, one missed is back unsaid."""
    return _returned(name, taken, restores, erasures, {}, MAX_DEPTH)


def earliest(name: str, taken: Taken, restores: Sequence[tuple[int, str]]) -> int:
    """The oldest time the restores behind backup `name` reach: erasures from then on matter."""
    oldest, seen, todo = taken(name)[0], set(), [(name, MAX_DEPTH)]
    while todo:
        backup, depth = todo.pop()
        if backup in seen or not depth:
            continue
        seen.add(backup)
        for _restored_ms, source in _behind(backup, taken, restores):
            oldest = min(oldest, taken(source)[0])
            todo.append((source, depth - 1))
    return oldest


def _returned(
    name: str,
    taken: Taken,
    restores: Sequence[tuple[int, str]],
    erasures: Sequence[tuple[int, str]],
    known: dict[str, set[str]],
    depth: int,
) -> set[str]:
    if name in known:
        return known[name]
    known[name] = set()  # a loop (names that cannot be) adds nothing
    if not depth:
        return set()
    taken_from = taken(name)[0]
    held: set[str] = set()
    for restored_ms, source in _behind(name, taken, restores):
        # What that restore brought back: what its backup held again, and who was erased after its backup
        # was taken and before the restore; less who was erased again before this backup was taken.
        brought = _returned(source, taken, restores, erasures, known, depth - 1) | {
            user for at, user in erasures if taken(source)[0] <= at < restored_ms
        }
        held |= brought - {user for at, user in erasures if restored_ms <= at < taken_from}
    known[name] = held
    return held


def _behind(name: str, taken: Taken, restores: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """The restores backup `name`'s store may come from: the last one that finished before it was taken,
    and any that finished within the time its taking is known to (each its (finished, backup))."""
    low, high = taken(name)
    candidates = [(at, backup) for at, backup in restores if low <= at < high]
    before = [(at, backup) for at, backup in restores if at < low]
    if before:
        candidates.append(max(before))
    # A backup named as if taken after its own restore (a copied or renamed folder): no lineage from it.
    return [(at, backup) for at, backup in candidates if taken(backup)[0] < at]
