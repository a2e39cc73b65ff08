"""The versions `eventpipe migrate` runs: every one that store.schema defines, each once, in version order.

The versions live in several modules of store.schema (by the tables they made)
and store.migration puts them in order; what they do to a store is tested in
tests/integration/test_store.py.
"""

from __future__ import annotations

import importlib
import pkgutil

from eventpipe.store import schema
from eventpipe.store.migration import DERIVED, MIGRATIONS, SOURCE, engines


def test_versions_run_once_each_in_order_with_none_missing() -> None:
    # A gap or a number given twice (two modules can each hold one) would run
    # a version out of turn, or leave it out, on every new store.
    assert [migration.version for migration in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_every_version_a_schema_module_defines_is_run() -> None:
    defined = []
    for module in pkgutil.iter_modules(schema.__path__):
        defined += getattr(importlib.import_module(f"{schema.__name__}.{module.name}"), "MIGRATIONS", ())
    assert sorted(defined, key=lambda migration: migration.version) == list(MIGRATIONS)


def test_every_restored_or_derived_table_has_the_engines_its_migrations_make() -> None:
    # A CREATE the pattern cannot read would leave its table with no engine, and the foreign-backup check
    # would then take any engine for it.
    made = engines()
    assert set(made) == {*SOURCE, *DERIVED}
    assert made["events"] == {"ReplacingMergeTree"} and made["schema_migrations"] == {"ReplacingMergeTree"}
