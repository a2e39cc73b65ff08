"""Dead-letter replay: stored payloads parsed again under today's contract, and stored if they pass now.

A letter goes the worker's way again: `parse` with the limits the process runs
with, under its original topic, receive time and size, then the Writer. So a
replayed event is the event the worker would have stored: the same id (given,
or derived from topic and payload) and the same time (given, or the first
copy's: the Writer looks undated events up), and a replay run twice, or one
meeting the same message over MQTT, stores one event. Events are written
before outcomes are recorded: a replay cut short is done again, and its
copies collapse.

Work per call is bounded: at most MAX_EXAMINED letters, their payloads read in
chunks of at most CHUNK_BYTES; the answer says how many are still due.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from eventpipe import __version__
from eventpipe.errors import StorageError, UnknownStorageError
from eventpipe.events import Event, Limits, Reason, Rejection, parse
from eventpipe.events import codec as codec_module
from eventpipe.events import contract as contract_module
from eventpipe.events import timestamp as timestamp_module
from eventpipe.ingest.retry import POISON_AFTER
from eventpipe.store.mark import REPLAY_AHEAD, replay_name
from eventpipe.store.outcome import Candidate, Outcome, Outcomes, Selection
from eventpipe.store.row import StoredDeadLetter
from eventpipe.store.writer import Mark, Writer

log = logging.getLogger(__name__)

MAX_EXAMINED = 10_000
CHUNK_BYTES = 8 * 1024 * 1024
# Failures named in an answer; the rest are counted.
MAX_FAILURES_SHOWN = 100
# A detail may quote the payload (a timestamp's text): kept short in answers and outcomes.
MAX_DETAIL_CHARS = 1000
CUT = "cut"
# The first wait after an unclassified insert error, doubled at each (to 1 s): POISON_AFTER of them take
# about 3 s, in an admin's call that may take minutes anyway.
BLIP_S = 0.25
# The most one call waits so in all: each chunk of up to 10,000 letters could wait its 3 s (about 4 minutes
# over 79 chunks, holding the admin routes' turn); past it, an error that repeats is isolated at once.
BLIP_BUDGET_S = 10.0


@dataclass
class Failure:
    dead_letter_id: str
    reason: str
    detail: str


@dataclass
class Report:
    examined: int = 0
    stored: int = 0
    still_failing: int = 0
    remaining: int = 0
    failures: list[Failure] = field(default_factory=list)
    # Ids asked for that no dead letter has: mistyped, or erased.
    unknown: list[str] = field(default_factory=list)


def contract_of(limits: Limits) -> str:
    """What a failure depends on: the parser's code and the limits. A letter that failed
    is due again once either changed (a setting relaxed, a format accepted)."""
    digest = hashlib.sha256(repr(limits).encode())
    for module in (contract_module, codec_module, timestamp_module):
        try:
            digest.update(Path(str(module.__file__)).read_bytes())
        except OSError:  # no source beside the code: the release names it
            digest.update(__version__.encode())
    return digest.hexdigest()[:16]


class Replayer:
    def __init__(self, outcomes: Outcomes, writer: Writer, limits: Limits) -> None:
        self._outcomes = outcomes
        self._writer = writer
        self._limits = limits
        self.contract = contract_of(limits)
        # One replay at a time per process: two would parse and store the same letters twice.
        self._lock = threading.Lock()
        # Its name among the workers' marks (store.mark.REPLAY_PREFIX), which an erasure in any process reads;
        # with this process's, by which an erasure on the embedded engine knows one of a process since gone.
        self._name = replay_name(secrets.token_hex(8))
        self._written_ms = 0
        self._waits_until = 0.0  # time.monotonic() past which this call waits no more for a blip to pass

    def replay(self, selection: Selection) -> Report:
        with self._lock:
            report = Report()
            # Marked running before any letter is read: an erasure that deletes the user's letters then
            # waits for this call to end, and deletes the events it stored.
            self._mark(retired=False)
            self._waits_until = time.monotonic() + BLIP_BUDGET_S
            try:
                candidates = self._outcomes.candidates(selection, self.contract, MAX_EXAMINED)
                for chunk in _chunks(candidates, CHUNK_BYTES):
                    self._replay(self._outcomes.letters(chunk), report)
                    self._mark(retired=False)
                # Letters named by id are due whatever their outcome (an operator's explicit retry), and
                # one call takes them all (at most 1,000 ids, under MAX_EXAMINED): counted due again,
                # a client calling while remaining is above 0 would call for ever.
                report.remaining = 0 if selection.ids is not None else self._outcomes.due(selection, self.contract)
                if selection.ids is not None:
                    # Named, yet examined 0 said nothing of an id that matched no letter.
                    report.unknown = sorted(set(selection.ids) - self._outcomes.known(selection.ids))
            finally:
                self._retire()
            return report

    def _mark(self, retired: bool) -> None:
        # Strictly later than the last: ReplacingMergeTree keeps the mark with the greatest `written`.
        self._written_ms = max(time.time_ns() // 1_000_000, self._written_ms + 1)
        self._writer.insert_marks([Mark(self._name, REPLAY_AHEAD, retired, self._written_ms)])

    def _retire(self) -> None:
        try:
            self._mark(retired=True)
        except StorageError as exc:  # the call's own outcome (or failure) is what it answers; a bug is raised
            # Not retired, an erasure in any process waits for it (a minute at most, then answers
            # complete: false) until its last mark is REPLAY_STALE_MS old, or, on the embedded engine, this
            # process ends.
            log.warning("dead-letter replay: could not mark its end (%s): erasures wait for it meanwhile", exc)

    def _replay(self, letters: list[StoredDeadLetter], report: Report) -> None:
        now_ms = time.time_ns() // 1_000_000
        events: list[Event] = []
        sources: list[StoredDeadLetter] = []
        failed: list[tuple[StoredDeadLetter, str, str]] = []
        for letter in letters:
            if len(letter.payload) < letter.payload_size:
                failed.append((letter, CUT, _cut(letter)))
                continue
            result = parse(letter.topic, letter.payload, letter.received_ms, self._limits, letter.payload_size)
            if isinstance(result, Rejection):
                failed.append((letter, str(result.reason), result.detail[:MAX_DETAIL_CHARS]))
            elif self._limits.retention_ms and result.timestamp_ms < now_ms - self._limits.retention_ms:
                # Checked against its receipt it passed, but the TTL runs from now: stored, it would
                # expire as it was inserted, and be reported replayed.
                days = self._limits.retention_ms / 86_400_000
                detail = f"timestamp is more than {days:g} days old, past the retention (EVENTPIPE_RETENTION_DAYS)"
                failed.append((letter, str(Reason.INVALID_TIMESTAMP), detail))
            else:
                events.append(result)
                sources.append(letter)
        refused = self._insert(events)
        outcomes = []
        for index, letter in enumerate(sources):
            if index in refused:
                failed.append((letter, "storage_rejected", refused[index][:MAX_DETAIL_CHARS]))
            else:
                outcomes.append(Outcome(letter.dead_letter_id, now_ms, "replayed", self.contract, "", ""))
        for letter, reason, detail in failed:
            outcomes.append(Outcome(letter.dead_letter_id, now_ms, "failed", self.contract, reason, detail))
            if len(report.failures) < MAX_FAILURES_SHOWN:
                report.failures.append(Failure(letter.dead_letter_id, reason, detail))
        self._outcomes.record(outcomes)
        report.examined += len(letters)
        report.stored += len(sources) - len(refused)
        report.still_failing += len(failed)

    def _insert(self, events: list[Event]) -> dict[int, str]:
        """Insert `events`, returning the refused ones' reasons by index. An unclassified error that repeats
        POISON_AFTER times, as the worker waits for one, then has the rows isolated, each failing alone
        refused while the store takes a known-good row (Writer): a poison letter failed its whole chunk at
        every call, and letters go oldest first, so no replay got past it. Isolated at the first error, a
        blip marked good letters failed, which no later replay takes again (a review)."""
        for attempt in range(POISON_AFTER - 1):
            try:
                return dict(self._writer.insert_events(events))
            except UnknownStorageError:
                wait = min(BLIP_S * 2**attempt, 1.0)
                if time.monotonic() + wait > self._waits_until:
                    break
                time.sleep(wait)
        return dict(self._writer.insert_events(events, isolate_unknown=True))


def _cut(letter: StoredDeadLetter) -> str:
    return (
        f"the payload was cut to its first {len(letter.payload)} of {letter.payload_size} bytes when it was"
        " received (the size limit then): what is stored is not the message, so it cannot be replayed;"
        " have its producer publish it again"
    )


def _chunks(candidates: list[Candidate], max_bytes: int) -> list[list[str]]:
    """Ids in order, grouped so that each group's payloads hold at most `max_bytes` (one letter at least)."""
    chunks: list[list[str]] = []
    size = 0
    for candidate in candidates:
        if not chunks or size + candidate.stored_bytes > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(candidate.dead_letter_id)
        size += candidate.stored_bytes
    return chunks
