"""Which erased users a backup holds again: those a restore before it brought back, unless erased again; and
which erasures came after a backup, in the order the audit recorded them, whatever the clocks said."""

from __future__ import annotations

from eventpipe.store.lineage import (
    ERASED_SINCE,
    ERASED_SINCE_TIME,
    PLACED,
    TIMED,
    Place,
    catalogued,
    earliest,
    erased_since,
    from_place,
    named,
    recorded,
    returned,
)

TAKEN = {"B": 100, "U1": 300, "U2": 500, "C": 700}


def at(ms: int) -> Place:
    """A time of what was recorded before migration 24."""
    return (TIMED, ms)


def timed(events: list[tuple[int, str]]) -> list[tuple[Place, str]]:
    return [(at(ms), what) for ms, what in events]


def taken(name: str) -> tuple[Place, Place]:
    """As the catalog knew them before migration 24: to the millisecond."""
    return catalogued(None, TAKEN[name])


def test_a_backup_of_a_store_never_restored_holds_no_one_erased_before_it() -> None:
    assert returned("B", taken, [], timed([(50, "lena")])) == set()
    assert returned("U1", taken, [], timed([(200, "lena")])) == set()


def test_the_backup_of_what_a_restore_replaced_taken_after_that_restore_holds_its_erased_users_again() -> None:
    # B taken at 100, lena erased at 200, B restored (done at 400, U1 the store before it), then U1 restored
    # (done at 600, U2 taken at 500 of the store B's restore had made): U2 holds lena again.
    restores = timed([(400, "B"), (600, "U1")])
    erasures = timed([(200, "lena"), (250, "omar"), (50, "older")])
    assert returned("U2", taken, restores, erasures) == {"lena", "omar"}
    assert earliest("U2", taken, restores) == at(100)
    # U1 was taken before B's restore: of the store the erasures had reached.
    assert returned("U1", taken, restores, erasures) == set()


def test_a_user_erased_again_after_the_restore_is_not_held_again() -> None:
    restores = timed([(400, "B")])
    assert returned("U2", taken, restores, timed([(200, "lena"), (450, "lena"), (250, "omar")])) == {"omar"}
    # Erased again only after the backup was taken: that backup still holds them.
    assert returned("U2", taken, restores, timed([(200, "lena"), (550, "lena")])) == {"lena"}


def test_an_erasure_a_restore_made_again_brings_no_one_back() -> None:
    # B restored, stopped after erasing lena again (225), then U1, what the store held before, restored (at
    # 400) instead: U1 was taken after lena's erasure (200), so U2 holds no lena. Counted as an erasure that
    # restore undid, an undo after a stopped restore said 13 users were back, none was (found by an attack).
    restores = timed([(400, "U1")])
    assert returned("U2", taken, restores, timed([(200, "lena")]), timed([(350, "lena")])) == set()
    # It erases again all the same: a user brought back by a restore and erased again after it is not held.
    restores = timed([(400, "B")])
    assert returned("U2", taken, restores, timed([(200, "lena")]), timed([(450, "lena")])) == set()
    assert returned("U2", taken, restores, timed([(200, "lena")]), timed([(550, "lena")])) == {"lena"}


def test_restores_within_restores_are_followed_back() -> None:
    # C (700) was taken of a store U2's restore (done 650) made; U2 (500) of one B's restore (done 400) made.
    restores = timed([(400, "B"), (650, "U2")])
    erasures = timed([(200, "lena"), (520, "omar"), (660, "pia")])
    assert returned("C", taken, restores, erasures) == {"lena", "omar"}, "pia was erased after U2's restore"
    assert earliest("C", taken, restores) == at(100)


def test_a_backup_named_as_if_taken_after_its_own_restore_has_no_lineage() -> None:
    # A copied or renamed backup folder: no loop, nothing made up.
    assert returned("C", taken, timed([(600, "C"), (650, "C")]), timed([(200, "lena")])) == set()


def test_a_backup_known_to_the_second_only_follows_every_restore_it_may_come_after() -> None:
    # A redo run straight after a restore: its backup of what it replaces was taken 240 ms after that restore
    # finished, in the same second, which its name gives alone. Compared at the second, the restore seemed to
    # come after the backup, and the user it brought back was not reported (a review).
    def by_name(name: str) -> tuple[Place, Place]:
        return named({"B": 1000, "U": 5000}[name])

    restores = timed([(5240 - 240, "B")])  # finished at 5000 ms, U taken at 5240 ms, named 5 s
    assert returned("U", by_name, restores, timed([(1500, "lena")])) == {"lena"}
    # And one that may have finished after the backup was taken is followed too: reported twice, never missed.
    assert returned("U", by_name, timed([(5900, "B")]), timed([(1500, "lena")])) == {"lena"}
    assert returned("U", by_name, timed([(6000, "B")]), timed([(1500, "lena")])) == set(), (
        "after the second: not behind it"
    )


# Since migration 24: how many erasures and finished restores the audit had recorded when each backup began.
BEFORE = {"B": 0, "U1": 2, "U2": 3, "C": 5}


def placed(name: str) -> tuple[Place, Place]:
    return catalogued(BEFORE[name], 0)


def test_a_numbered_erasure_falls_between_the_backups_that_counted_fewer_and_more() -> None:
    # Ordinal k is the k-th thing the audit recorded: after a backup that began when k - 1 had been, before one
    # that began when k had been.
    erasure = recorded(3, 0)
    assert placed("U1")[0] < erasure < placed("U2")[0]
    assert recorded(0, 1234) == at(1234), "recorded before migration 24: by its time"
    assert catalogued(None, 1234) == (at(1234), at(1235))


def test_the_audits_order_decides_whatever_the_times_say() -> None:
    # The clock attack: B taken (nothing recorded), lena erased (1), B restored (2): lena is back. U taken
    # then (2 recorded) under a clock an hour ahead; the clock set right, lena erased again (3), at a time
    # before U's. By time that erasure came before U and took her out of what U holds again; by the audit's
    # order it came after, so U holds her (and its restore counts that erasure as made since).
    hour = 3_600_000
    times = {"B": 0, "U": 2 * hour}
    restores = [(recorded(2, hour), "B")]
    erasures = [(recorded(1, hour // 2), "lena"), (recorded(3, hour + hour // 2), "lena")]
    by_order = {"B": catalogued(0, times["B"]), "U": catalogued(2, times["U"])}
    assert returned("U", by_order.__getitem__, restores, erasures) == {"lena"}
    assert erased_since(True, 2, times["U"])[1] == {"after": 2, "timed": 0, "since": 0}, "ordinal 3 counted"
    # The same by time, as before migration 24: she was missed.
    by_time = {name: catalogued(None, ms) for name, ms in times.items()}
    erased_by_time = timed([(hour // 2, "lena"), (hour + hour // 2, "lena")])
    assert returned("U", by_time.__getitem__, timed([(hour, "B")]), erased_by_time) == set()


def test_a_numbered_restore_brings_back_who_was_erased_between_its_backup_and_it() -> None:
    # B (0 recorded), lena erased (1), omar erased (2), B restored (3): the store holds lena and omar again.
    # U2 began when 3 had been recorded: after that restore; C when 5 had: omar erased again (4) before it.
    restores = [(recorded(3, 0), "B")]
    erasures = [(recorded(1, 0), "lena"), (recorded(2, 0), "omar"), (recorded(4, 0), "omar")]
    assert returned("U2", placed, restores, erasures) == {"lena", "omar"}
    assert returned("C", placed, restores, erasures) == {"lena"}
    # U1 (2 recorded) began before the restore (3): of the store the erasures had reached.
    assert returned("U1", placed, restores, erasures) == set()
    assert earliest("C", placed, restores) == placed("B")[0]


def test_a_numbered_backup_whose_restore_fell_at_an_earlier_time_is_not_behind_it() -> None:
    # The restore's server clock an hour behind: by time it finished before U1 was taken; by the audit's order
    # after (ordinal 3, U1 began at 2). Nothing U1 holds came back through it.
    hour = 3_600_000
    restores = [(recorded(3, -hour), "B")]
    erasures = [(recorded(1, 0), "lena")]
    assert returned("U1", placed, restores, erasures) == set()


def test_a_backup_recorded_before_migration_24_comes_before_everything_numbered() -> None:
    # OLD was taken at 100 ms by an older eventpipe; lena erased at 200 ms then (no ordinal); the store upgraded,
    # omar erased (ordinal 2), OLD restored (3), NEW taken (3 recorded): NEW holds both again.
    def mixed(name: str) -> tuple[Place, Place]:
        return catalogued(None, 100) if name == "OLD" else catalogued(3, 0)

    restores = [(recorded(3, 0), "OLD")]
    erasures = [(recorded(0, 200), "lena"), (recorded(2, 50), "omar"), (recorded(0, 50), "before")]
    assert returned("NEW", mixed, restores, erasures) == {"lena", "omar"}
    assert earliest("NEW", mixed, restores) == at(100)


def test_the_erasures_from_a_place_on() -> None:
    # A backup that began when 5 had been recorded: ordinals above 5, none by time.
    assert from_place(catalogued(5, 0)[0]) == {"after": 5, "timed": 0, "since": 0}
    # A restore's place (its ordinal 4): from it on.
    assert from_place(recorded(4, 0)) == {"after": 3, "timed": 0, "since": 0}
    # A time: every numbered one and those from before migration 24 from then on.
    assert from_place(at(1234)) == {"after": 0, "timed": 1, "since": 1234}


def test_the_erasures_since_a_backup_are_counted_by_its_place_and_by_time_only_when_it_has_none() -> None:
    assert erased_since(True, 7, 5000) == (ERASED_SINCE, {"after": 7, "timed": 0, "since": 0})
    # Recorded before migration 24: every numbered erasure, and older ones from the second its name gives.
    assert erased_since(True, None, 5000) == (ERASED_SINCE, {"after": 0, "timed": 1, "since": 5000})
    # Not in this store's catalog (taken on another host): by time alone, nothing else places it.
    assert erased_since(False, None, 5000) == (ERASED_SINCE_TIME, {"since": 5000})
    assert at(10**15) < (PLACED, 0), "anything numbered comes after any time"
