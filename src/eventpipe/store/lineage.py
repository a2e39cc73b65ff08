"""Which erased users a backup holds again though they were erased before it was taken, and which erasures
came after a backup: in the order of what the audit recorded, not by clocks.

A backup holds the store as it was when taken, every erasure made before then
applied, but for a store that a restore had brought back before the backup was
taken: that one held again the users erased between the restored backup's time
and that restore, unless they were erased again after it. A restore counted the
erasures since the backup's time only, and so said nothing when it brought back
the backup of what an earlier restore replaced, taken after that restore (found
by an attack: a user erased before both came back, unsaid).

"Before" and "after" are places in one order, not times. Since migration 24
every erasure and finished restore is numbered as it is recorded (its ordinal:
how many of either were recorded before it, and one, or one past the highest used
where more: RECORDED_SO_FAR), and every backup notes how
many were recorded when it began (store.schema.record.ERASURE_ORDINAL). Compared
by time, the API's clock an hour ahead while a backup was taken, then set right,
put an erasure made after it before it, and its restore said nothing of that
user (found by an attack with a clock shim; a backward NTP step did the same).
What was recorded before migration 24 has no ordinal and keeps its time: it is
ordered by time among itself and before everything numbered (TIMED, PLACED), so
a backup of an older store, restored now, counts every numbered erasure as made
after it. A backup this store's catalog does not list (taken on another host) is
placed by the time its name gives, as such.

Two erasures in two API processes at once may get one ordinal. That misses
nothing: an erasure reads the count after its deletes are done, and a backup
before it begins, so an ordinal at or below a backup's count was read before
that backup's, and the erasure's deletes were done before the backup began.

`returned` is pure; Backups reads its inputs from the tables every restore keeps
(migration.KEPT): the catalog, the restores and the erasure audit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# How many erasures and finished restores have been recorded: the ordinal of the next, less one. An
# erasure reads it after its deletes (store.erasure.Eraser.record), a restore as it records that it
# finished (stack stopped: no erasure runs meanwhile), a backup before it begins.
# Or the highest ordinal recorded, where that is more: a restore's redo numbers its erasures after the
# ordinal it takes for itself (store.backup), and one killed or failing before it finished left them
# numbered one past the count, so the next restore took the last one's ordinal for its own (found by an
# attack), and an erasure tied with it counted as after it.
RECORDED_SO_FAR = (
    "greatest((SELECT count() FROM erasures) + (SELECT count() FROM restores WHERE finished),"
    " (SELECT max(ordinal) FROM erasures), (SELECT max(ordinal) FROM restores WHERE finished))"
)
# The restores that finished, oldest first: when each finished, its ordinal (0 before migration 24) and the
# backup it brought back.
FINISHED_RESTORES = (
    "SELECT toUnixTimestamp64Milli(restored_at), ordinal, backup FROM restores WHERE finished"
    " ORDER BY ordinal, restored_at"
)
# The catalog's backups with what places them: when each was taken and, since migration 24, how many
# erasures and finished restores were recorded when it began.
PLACES = "SELECT name, toUnixTimestamp64Milli(taken_at), ordinal_before FROM backups FINAL"
# The erasures from a place on (`from_place`): numbered ones past `after`, and with `timed` also every one
# from before migration 24 recorded from `since` on.
FROM_PLACE = (
    "(ordinal > {after:UInt64} OR ({timed:UInt8} AND ordinal = 0"
    " AND erased_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')))"
)
# The key name of the erasures a restore made again (store.redo): no admin key can have it (a space,
# api.keyfile.NAME). Each makes again an erasure before it in the order, and counts there: where it falls
# itself, a backup taken between the two (that one, or what the restore replaced) held the user's events
# stored after the first, and restoring it erased them again (found by an attack: an undo took a user's
# later events). Left out of what a restore counts and redoes since its backup; not of `returned`, where
# it says who a restore no longer brought back.
REDONE_BY = "eventpipe restore"
NOT_REDONE = f" AND key_name != '{REDONE_BY}'"
# Those erasures: when each was recorded, its ordinal, the user's keyed hash, and whether a restore made it again.
ERASURES_SINCE = (
    "SELECT toUnixTimestamp64Milli(erased_at), ordinal, user_hash,"  # noqa: S608 - constants
    f" key_name = '{REDONE_BY}' FROM erasures WHERE " + FROM_PLACE
)
# How many there are, and the oldest time any of them was recorded at: the audit lists erasures by time,
# and one recorded under a clock set wrong may carry a time from before the backup's.
ERASED_SINCE = (
    "SELECT count(), min(toUnixTimestamp64Milli(erased_at)) FROM erasures WHERE " + FROM_PLACE + NOT_REDONE  # noqa: S608
)
# For a backup this store's catalog does not list: by time alone, as before migration 24, as nothing else
# says where it falls.
ERASED_SINCE_TIME = (
    "SELECT count(), min(toUnixTimestamp64Milli(erased_at)) FROM erasures"  # noqa: S608 - constants
    " WHERE erased_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')" + NOT_REDONE
)
# Whom they erased: the keyed hash of each user (store.audit), once, for a restore to erase them again.
HASHES_SINCE = "SELECT DISTINCT user_hash FROM erasures WHERE " + FROM_PLACE + NOT_REDONE  # noqa: S608
HASHES_SINCE_TIME = (
    "SELECT DISTINCT user_hash FROM erasures WHERE erased_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')"  # noqa: S608
    + NOT_REDONE
)
# Restores within restores are followed this deep at most: each step goes back in time, so only a store
# restored hundreds of times over could need more, and what lies further back is then left out.
MAX_DEPTH = 100
# A place in the order: (TIMED, epoch ms) for what was recorded before migration 24 (and a backup known by
# its name alone), before every (PLACED, n). Of numbered ones, the erasure or restore of ordinal k is at
# 2k, and a backup taken when k had been recorded between 2k + 1 and 2k + 2: after the k-th, before the next.
TIMED, PLACED = 0, 1
Place = tuple[int, int]
# Where a backup may fall: (earliest, latest), the latest not included. Exact from its ordinal; from the
# catalog's time, within that millisecond; from its name alone, within the second the name gives (a redo
# run straight after a restore falls in that restore's second: a review).
Taken = Callable[[str], tuple[Place, Place]]


def recorded(ordinal: int, at_ms: int) -> Place:
    """The place of an erasure or a finished restore: by its ordinal, by its time without one (0)."""
    return (PLACED, 2 * ordinal) if ordinal else (TIMED, at_ms)


def catalogued(ordinal_before: int | None, taken_ms: int) -> tuple[Place, Place]:
    """Where a backup the catalog lists falls: by how many erasures and restores were recorded when it began,
    by the catalog's time (to the millisecond) for one recorded before migration 24 (None)."""
    if ordinal_before is None:
        return (TIMED, taken_ms), (TIMED, taken_ms + 1)
    return (PLACED, 2 * ordinal_before + 1), (PLACED, 2 * ordinal_before + 2)


def named(name_ms: int) -> tuple[Place, Place]:
    """Where a backup the catalog does not list falls: within the second its name gives."""
    return (TIMED, name_ms), (TIMED, name_ms + 1000)


def from_place(place: Place) -> dict[str, object]:
    """The parameters of FROM_PLACE for the erasures at `place` or after it."""
    kind, at = place
    if kind == TIMED:
        # Every numbered erasure comes after it, and those from before migration 24 from its time on.
        return {"after": 0, "timed": 1, "since": at}
    # Ordinal k is at 2k: at or after `at` is k >= at / 2, k > (at - 1) // 2.
    return {"after": max(0, (at - 1) // 2), "timed": 0, "since": 0}


def erased_since(listed: bool, ordinal_before: int | None, name_ms: int) -> tuple[str, dict[str, object]]:
    """The query that counts the erasures made since a backup was taken (and the oldest time among them), and
    its parameters: past its ordinal; for one the catalog recorded before migration 24, from the second its
    name gives (an erasure made in that second before it began is one more to check rather than one
    missed); for one it does not list (`listed` False), by time alone."""
    by_time, parameters = _since(listed, ordinal_before, name_ms)
    return (ERASED_SINCE_TIME if by_time else ERASED_SINCE), parameters


def hashes_since(listed: bool, ordinal_before: int | None, name_ms: int) -> tuple[str, dict[str, object]]:
    """The query of the users' hashes those erasures name (`erased_since`'s erasures), and its parameters."""
    by_time, parameters = _since(listed, ordinal_before, name_ms)
    return (HASHES_SINCE_TIME if by_time else HASHES_SINCE), parameters


def _since(listed: bool, ordinal_before: int | None, name_ms: int) -> tuple[bool, dict[str, object]]:
    """Whether the erasures since a backup are found by time alone (one the catalog does not list), and the
    parameters that place it."""
    if not listed:
        return True, {"since": name_ms}
    return False, from_place(catalogued(ordinal_before, name_ms)[0])


def returned(
    name: str,
    taken: Taken,
    restores: Sequence[tuple[Place, str]],
    erasures: Sequence[tuple[Place, str]],
    redone: Sequence[tuple[Place, str]] = (),
) -> set[str]:
    """The user hashes of erasures made before backup `name` was taken that its data may hold again.

    `restores` are (place, backup) of the restores that finished, `erasures` (place, user hash) of the
    audit, covering every place the restores behind `name` go back to (`earliest` says which), and
    `redone` those a restore made again (REDONE_BY). Where a place is known to the second only, every
    restore the backup may come after is followed: a user reported twice costs an erasure run again, one
    missed is back unsaid. An erasure made again only erases again: one before a restore was made by an
    attempt stopped before it finished, on a store since dropped, and a restore of another backup did not
    bring its user back (counted so, an undo after a stopped restore said 13 users were back, none was)."""
    return _returned(name, taken, restores, erasures, list(erasures) + list(redone), {}, MAX_DEPTH)


def earliest(name: str, taken: Taken, restores: Sequence[tuple[Place, str]]) -> Place:
    """The oldest place the restores behind backup `name` reach: erasures from there on matter."""
    oldest, seen, todo = taken(name)[0], set(), [(name, MAX_DEPTH)]
    while todo:
        backup, depth = todo.pop()
        if backup in seen or not depth:
            continue
        seen.add(backup)
        for _restored, source in _behind(backup, taken, restores):
            oldest = min(oldest, taken(source)[0])
            todo.append((source, depth - 1))
    return oldest


def _returned(
    name: str,
    taken: Taken,
    restores: Sequence[tuple[Place, str]],
    erasures: Sequence[tuple[Place, str]],
    every: Sequence[tuple[Place, str]],
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
    for restored, source in _behind(name, taken, restores):
        # What that restore brought back: what its backup held again, and who was erased after its backup
        # was taken and before the restore; less who was erased again before this backup was taken.
        brought = _returned(source, taken, restores, erasures, every, known, depth - 1) | {
            user for at, user in erasures if taken(source)[0] <= at < restored
        }
        held |= brought - {user for at, user in every if restored <= at < taken_from}
    known[name] = held
    return held


def _behind(name: str, taken: Taken, restores: Sequence[tuple[Place, str]]) -> list[tuple[Place, str]]:
    """The restores backup `name`'s store may come from: the last one that finished before it was taken,
    and any that finished within the places its taking is known to (each its (place, backup))."""
    low, high = taken(name)
    candidates = [(at, backup) for at, backup in restores if low <= at < high]
    before = [(at, backup) for at, backup in restores if at < low]
    if before:
        candidates.append(max(before))
    # A backup named as if taken after its own restore (a copied or renamed folder): no lineage from it.
    return [(at, backup) for at, backup in candidates if taken(backup)[0] < at]
