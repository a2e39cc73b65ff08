"""Which erased users a backup holds again: those a restore before it brought back, unless erased again."""

from __future__ import annotations

from eventpipe.store.lineage import earliest, returned

TAKEN = {"B": 100, "U1": 300, "U2": 500, "C": 700}


def taken(name: str) -> tuple[int, int]:
    """As the catalog knows them: to the millisecond."""
    return TAKEN[name], TAKEN[name] + 1


def test_a_backup_of_a_store_never_restored_holds_no_one_erased_before_it() -> None:
    assert returned("B", taken, [], [(50, "lena")]) == set()
    assert returned("U1", taken, [], [(200, "lena")]) == set()


def test_the_backup_of_what_a_restore_replaced_taken_after_that_restore_holds_its_erased_users_again() -> None:
    # B taken at 100, lena erased at 200, B restored (done at 400, U1 the store before it), then U1 restored
    # (done at 600, U2 taken at 500 of the store B's restore had made): U2 holds lena again.
    restores = [(400, "B"), (600, "U1")]
    erasures = [(200, "lena"), (250, "omar"), (50, "older")]
    assert returned("U2", taken, restores, erasures) == {"lena", "omar"}
    assert earliest("U2", taken, restores) == 100
    # U1 was taken before B's restore: of the store the erasures had reached.
    assert returned("U1", taken, restores, erasures) == set()


def test_a_user_erased_again_after_the_restore_is_not_held_again() -> None:
    restores = [(400, "B")]
    assert returned("U2", taken, restores, [(200, "lena"), (450, "lena"), (250, "omar")]) == {"omar"}
    # Erased again only after the backup was taken: that backup still holds them.
    assert returned("U2", taken, restores, [(200, "lena"), (550, "lena")]) == {"lena"}


def test_restores_within_restores_are_followed_back() -> None:
    # C (700) was taken of a store U2's restore (done 650) made; U2 (500) of one B's restore (done 400) made.
    restores = [(400, "B"), (650, "U2")]
    erasures = [(200, "lena"), (520, "omar"), (660, "pia")]
    assert returned("C", taken, restores, erasures) == {"lena", "omar"}, "pia was erased after U2's restore"
    assert earliest("C", taken, restores) == 100


def test_a_backup_named_as_if_taken_after_its_own_restore_has_no_lineage() -> None:
    # A copied or renamed backup folder: no loop, nothing made up.
    assert returned("C", taken, [(600, "C"), (650, "C")], [(200, "lena")]) == set()


def test_a_backup_known_to_the_second_only_follows_every_restore_it_may_come_after() -> None:
    # A redo run straight after a restore: its backup of what it replaces was taken 240 ms after that restore
    # finished, in the same second, which its name gives alone. Compared at the second, the restore seemed to
    # come after the backup, and the user it brought back was not reported (a review).
    def by_name(name: str) -> tuple[int, int]:
        return {"B": (1000, 2000), "U": (5000, 6000)}[name]

    restores = [(5240 - 240, "B")]  # finished at 5000 ms, U taken at 5240 ms, named 5 s
    assert returned("U", by_name, restores, [(1500, "lena")]) == {"lena"}
    # And one that may have finished after the backup was taken is followed too: reported twice, never missed.
    assert returned("U", by_name, [(5900, "B")], [(1500, "lena")]) == {"lena"}
    assert returned("U", by_name, [(6000, "B")], [(1500, "lena")]) == set(), "after the second: not behind it"
