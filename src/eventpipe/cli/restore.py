"""Composition root of `eventpipe restore`: a backup back into a stopped native stack's store, or a server's."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path

from eventpipe.api.model import rfc3339
from eventpipe.cli.console import setup_logging, warn_password_flag
from eventpipe.config import Settings
from eventpipe.errors import BackupError, ConfigError, StorageError
from eventpipe.process import interrupted_by
from eventpipe.redaction import redact
from eventpipe.stack.credential import kept_secret
from eventpipe.stack.lock import DATA_DIR_SETTING, data_dir_of, stopped
from eventpipe.stack.permission import private_store
from eventpipe.stack.secret import ERASURE_KEY_FILE
from eventpipe.store.backup import Backups, Restored
from eventpipe.store.catalog import Backup
from eventpipe.store.client import backup_dir, connect
from eventpipe.store.dsn import embedded_dsn
from eventpipe.store.erasure import Eraser
from eventpipe.store.lineage import REDONE_BY
from eventpipe.store.redo import Redone, redo_erasures

log = logging.getLogger("eventpipe")
# Also the key name of its erasures made again, which a later restore tells apart by it (store.lineage).
TAKEN_BY = REDONE_BY
AGAIN = "erase each of them again (POST /admin/erase) once the stack is up (docs/operations.md, Erasure)"


def run_restore(args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    if args.clickhouse_dsn:
        warn_password_flag("restore", "--clickhouse-dsn", args.clickhouse_dsn, "EVENTPIPE_CLICKHOUSE_DSN")
    # A DSN given or set restores onto that server; otherwise a data dir, as `eventpipe up` resolves it.
    server = args.clickhouse_dsn or ("" if args.data_dir else settings.clickhouse_dsn)
    source = "--clickhouse-dsn" if args.clickhouse_dsn else "EVENTPIPE_CLICKHOUSE_DSN"
    # A chdb:// DSN naming an `up` data dir's store is restored as that data dir: its lock, and its erasure
    # secret and replay marks, without which the erasures made since the backup were not made again.
    kept = data_dir_of(server)
    data_dir = kept or (None if server else Path(args.data_dir or settings.data_dir))
    with ExitStack() as held:
        # A server is named by where it came from: one out of reach, set in the environment, was blamed on nothing.
        setting = ""
        if data_dir is None:
            dsn, where = server, redact(server)
            setting = f" ({source})"
        else:
            if not data_dir.is_dir():
                # Without options the data dir is EVENTPIPE_DATA_DIR's or ./.eventpipe, which the user never named.
                came = (
                    ""
                    if args.data_dir
                    else " (EVENTPIPE_DATA_DIR, else ./.eventpipe: no --data-dir or --clickhouse-dsn was given, "
                    "and EVENTPIPE_CLICKHOUSE_DSN is not set)"
                )
                raise ConfigError(f"{data_dir.resolve()}{came} is no directory: give the --data-dir of `eventpipe up`")
            # Held through the restore, so that no `up` starts on a half-restored store. A lock it cannot take is
            # blamed on what named the data dir.
            held.enter_context(
                closing(stopped(data_dir, "then restore", "restore", source if kept else DATA_DIR_SETTING))
            )
            private_store(data_dir)
            dsn, where = embedded_dsn(data_dir), str(data_dir.resolve())
            _check_present(dsn, args.backup)
        # Before anything is dropped: a secret file that cannot be read stops the restore, not its end.
        secret = _erasure_secret(settings, data_dir)
        try:
            client = connect(dsn)
        except StorageError as exc:
            raise type(exc)(f"cannot reach ClickHouse at {where}{setting}: {exc}") from exc
        again = f"--data-dir '{where}'" if data_dir is not None else "--clickhouse-dsn DSN"

        def replacing(replaced: Backup) -> None:
            # Before the drop: a restore killed after it still leaves the way back on the screen.
            print(
                # Not "what it replaces": on a store a restore left half done, this is what it held before that.
                f"what the store held before ({replaced.events} events, {replaced.dead_letters} dead letters) "
                f"is backup {replaced.name}: `eventpipe restore {again} --backup {replaced.name}` brings it back",
                flush=True,
            )

        redo: Callable[[int], Redone] | None = None
        if secret is not None:
            eraser, key = Eraser(client, embedded=data_dir is not None), secret

            def redo(first: int) -> Redone:
                # Before the restore is recorded as finished: killed meanwhile, it is one to run again.
                # Its letters' users looked for in the envelopes the worker reads, as they are set for it.
                return redo_erasures(
                    client, args.backup, key, eraser, TAKEN_BY, first, envelopes=settings.envelope_keys
                )

        # A stop asked for by a signal, as Ctrl-C is: told as an interruption, with what it left.
        with interrupted_by(signal.SIGTERM, signal.SIGHUP):
            restored = Backups(client).restore(args.backup, settings.retention_days, TAKEN_BY, replacing, redo)
    return _finish(restored, where)


def _finish(restored: Restored, where: str) -> int:
    """Say what the restore brought back, whom it erased again (those erased since the backup), and what is
    left to redo."""
    print(
        f"restored backup {restored.name} into {where}: {restored.events} events, "
        f"{restored.dead_letters} dead letters; tables derived from events rebuilt from them",
        flush=True,
    )
    log.info("restored backup %s into %s", restored.name, where)
    erased, redone = restored.erased_since, restored.redone
    if redone is not None and redone.users:
        print(
            f"erased again {redone.found} of the {redone.users} user(s) erased since backup {restored.name} was "
            f"taken, whose events or dead letters it held: {redone.events} events, {redone.dead_letters} dead "
            f"letters (each recorded in the audit, by {TAKEN_BY!r})",
            flush=True,
        )
        if redone.found < redone.users or not redone.complete:
            # Found by the user ids of their events and of their letters' JSON: one named only in letters that
            # are no JSON or name them elsewhere, or erased under another key, is not.
            said = (
                f"{redone.users - redone.found} user(s) erased since backup {restored.name} was taken had no events "
                f"in it, nor dead letters giving their user_id as JSON, or were erased under another "
                f"EVENTPIPE_ERASURE_SECRET (GET /admin/erasures lists those "
                f"erasures among those from {rfc3339(restored.erased_since_ms)} on): dead letters naming them may be "
                "back"
                if redone.found < redone.users
                else "an erasure made again was not complete (see the log above)"
            )
            print(f"eventpipe restore: {said}; {AGAIN}", file=sys.stderr, flush=True)
    elif erased != 0 and redone is None:
        since = f"since backup {restored.name} was taken"
        said = (
            f"could not count the erasures made {since}: those GET /admin/erasures lists from then on may have"
            " their users' events back"
            if erased is None
            # From the oldest time the audit gives them, not the backup's: one recorded under a clock set back
            # carries a time from before the backup's, and is after it all the same (store.lineage).
            else f"{erased} erasure(s) were made {since} (GET /admin/erasures lists them among those from "
            f"{rfc3339(restored.erased_since_ms)} on): the events of those users may be in the store again, "
            "and without EVENTPIPE_ERASURE_SECRET (the API's) the restore cannot find them to erase them again"
        )
        # The audit keeps only keyed hashes: who they were is in the operator's own record of the requests.
        print(f"eventpipe restore: {said}; {AGAIN}", file=sys.stderr, flush=True)
    if restored.returned != 0:
        # The backup of a store an earlier restore had brought back holds again who was erased before that.
        said = (
            f"cannot tell whether backup {restored.name} holds again users erased before it was taken (it is not "
            "in this store's catalog, or the store's records could not be read): if the store it was taken of had "
            "been restored before, those erased between that restore's backup and it may be back too"
            if restored.returned is None
            else f"backup {restored.name} holds again {restored.returned} user(s) erased before it was taken, "
            f"from {rfc3339(restored.returned_since_ms)} on (a restore before it brought them back, and they were "
            "not erased again: GET /admin/erasures lists those erasures)"
        )
        print(f"eventpipe restore: {said}; {AGAIN}", file=sys.stderr, flush=True)
    return 0


def _erasure_secret(settings: Settings, data_dir: Path | None) -> str | None:
    """The key of the audit's hashes, as the API holds it: EVENTPIPE_ERASURE_SECRET, or the one `eventpipe up`
    keeps in its data dir; None on a server without it set."""
    if settings.erasure_secret is not None:
        return settings.erasure_secret.get_secret_value()
    return None if data_dir is None else kept_secret(data_dir / ERASURE_KEY_FILE)


def _check_present(dsn: str, name: str) -> None:
    """On the native stack, say which backups there are when the one asked for is not."""
    directory = backup_dir(dsn)
    if directory is None or (directory / name / ".backup").is_file():
        return
    # Names begin with the time taken: newest first, as GET /admin/backups lists them.
    there = sorted((path.name for path in directory.glob("*") if (path / ".backup").is_file()), reverse=True)
    listed = ", ".join(there[:5]) if there else "none"
    raise BackupError(f"no backup {name} in {directory}; the newest there, newest first: {listed}")
