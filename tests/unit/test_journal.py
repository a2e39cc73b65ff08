"""The broker log counter: Mosquitto's own lines counted once each, a client's words never."""

from __future__ import annotations

from pathlib import Path

from eventpipe.stack.journal import Aside, Journal, count, goodbye

# In the wording of Mosquitto 2.0.11 to 2.0.22 (src/loop.c, lib/send_publish.c).
REFUSED = b"1796018637: Client p5-69619 disconnected due to oversize packet."
DROPPED = b"1796019102: Dropping too large outgoing PUBLISH for test-worker-1a2b3c4d (524303 bytes)"
# Mosquitto 2.1.2's (the compose broker's): the client's address after its id, other words.
REFUSED_21 = b"1796562092: Client prod-1 [127.0.0.1:40445] disconnected: oversize packet."
OTHER = [
    b"1796018637: New connection from 127.0.0.1:59511 on port 18941.",
    # A client id chosen to look like a refusal is quoted inside other lines, never at their end.
    b"1796018637: New client connected from 127.0.0.1:59511 as Client x disconnected due to oversize packet. "
    b"(p5, c1, k60).",
    b"1796018640: Client Dropping too large outgoing PUBLISH for y (1 bytes) closed its connection.",
]


def totals(journal: Journal) -> dict[str, float]:
    (family,) = journal.collect()
    return {sample.labels["action"]: sample.value for sample in family.samples if sample.name.endswith("_total")}


def test_only_the_brokers_own_lines_count() -> None:
    assert count([*OTHER, REFUSED, DROPPED, REFUSED + b"\r"]) == {"refused": 2, "dropped": 1}


def test_mosquitto_2_1s_refusals_count_too() -> None:
    """Compose's broker is 2.1.2, whose words differ: EventpipeOversizePackets counted nothing there."""
    others = [
        b"1796562107: Client worker-1 [127.0.0.1:38177] disconnected: connection closed by client.",
        b"1796562093: Client prod-3 [127.0.0.1:43495] disconnected: topic alias invalid.",
        b"1796562091: Client oversize packet. [127.0.0.1:43651] disconnected: not authorised.",
    ]
    assert count([*others, REFUSED_21]) == {"refused": 1, "dropped": 0}


def test_a_clients_goodbye_is_found_in_the_words_of_both_versions() -> None:
    """`up` waits for its worker's goodbye before it stops the broker; on 2.1 it waited out the timeout."""
    said = goodbye("worker-session-1")
    assert said.search(b"1796563340: Client worker-session-1 [127.0.0.1:35139] disconnected.\n")
    assert said.search(b"1796018640: Client worker-session-1 disconnected.\n")
    assert not said.search(b"1796018640: Client worker-session-10 disconnected.\n")
    assert not said.search(b"1796563340: Client worker-session-1x [127.0.0.1:35139] disconnected.\n")


def test_each_line_is_counted_once_from_where_this_run_began(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    log.write_bytes(REFUSED + b"\n")  # an earlier run's
    journal = Journal(log, start=log.stat().st_size)
    assert totals(journal) == {"refused": 0, "dropped": 0}
    with log.open("ab") as handle:
        handle.write(REFUSED + b"\n" + DROPPED[:20])  # a line half written when scraped
    assert totals(journal) == {"refused": 1, "dropped": 0}
    with log.open("ab") as handle:
        handle.write(DROPPED[20:] + b"\n")
    assert totals(journal) == {"refused": 1, "dropped": 1}
    assert totals(journal) == {"refused": 1, "dropped": 1}


def test_a_log_started_anew_is_read_from_its_beginning(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    journal = Journal(log)
    assert totals(journal) == {"refused": 0, "dropped": 0}  # not there yet
    log.write_bytes(b"\n".join([*OTHER, REFUSED, REFUSED]) + b"\n")
    assert totals(journal) == {"refused": 2, "dropped": 0}
    log.write_bytes(REFUSED + b"\n")  # rotated: shorter than what was read
    assert totals(journal) == {"refused": 3, "dropped": 0}


def test_what_was_caught_up_before_the_log_was_emptied_stays_counted_and_the_rest_is_read_anew(
    tmp_path: Path,
) -> None:
    # `up` copies a long log aside and empties it while the broker runs, after catching up the count.
    log = tmp_path / "mosquitto.log"
    log.write_bytes(b"\n".join([*OTHER, REFUSED]) + b"\n")
    journal = Journal(log)
    with log.open("ab") as handle:
        handle.write(DROPPED + b"\n")  # after the last scrape
    journal.catch_up()
    with log.open("r+b") as handle:
        handle.truncate(0)
    with log.open("ab") as handle:
        handle.write(REFUSED + b"\n")
    assert totals(journal) == {"refused": 2, "dropped": 1}


def test_a_line_mosquitto_cut_at_its_buffer_counts_as_nothing() -> None:
    # Mosquitto writes a line into 1,000 bytes and cuts the rest: a client id of about 950 bytes ended a cut
    # "Client <id> disconnected." with the refusal's words, and clean connections counted as refusals.
    ending = b" disconnected due to oversize packet."
    cut = b"1796018637: Client " + b"A" * (999 - 19 - len(ending)) + ending
    assert len(cut) == 999
    assert count([cut]) == {"refused": 0, "dropped": 0}
    assert count([cut[1:]]) == {"refused": 1, "dropped": 0}, "998 bytes: whole, as Mosquitto wrote it"
    assert count([REFUSED]) == {"refused": 1, "dropped": 0}


def test_a_long_log_is_copied_aside_and_emptied_after_its_lines_are_counted(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    log.write_bytes((REFUSED + b"\n") * 10)
    journal = Journal(log, start=0)
    aside = Aside(log, keep_bytes=len(REFUSED) * 20)
    assert aside(journal.catch_up) is False, "short: left as it is"
    with log.open("ab") as handle:  # the broker appends (O_APPEND), and goes on at the new end
        handle.write((REFUSED + b"\n") * 15)
    assert aside(journal.catch_up) is True
    assert log.stat().st_size == 0
    assert aside.path.read_bytes().count(REFUSED) == 25
    assert totals(journal) == {"refused": 25, "dropped": 0}, "counted before the emptying"
    with log.open("ab") as handle:
        handle.write(REFUSED + b"\n")
    assert totals(journal) == {"refused": 26, "dropped": 0}, "and on from the new start"


WORKER = "eventpipe-ingest-0123456789abcdef0123456789abcdef"
CONNECTIONS = [
    # The worker itself, signed in as `ingest`; its probe likewise; a producer under another id.
    f"1796483980: New client connected from 127.0.0.1:58477 as {WORKER} (p5, c0, k30, u'ingest').".encode(),
    f"1796483567: New client connected from 127.0.0.1:49519 as {WORKER}-probe (p5, c1, k60, u'ingest').".encode(),
    b"1796483568: New client connected from 127.0.0.1:49520 as eventpipe-publish-891acb36 (p5, c1, k60).",
    # A client id that quotes the worker's: not the worker's id.
    f"1796483569: New client connected from 127.0.0.1:49521 as x as {WORKER} (p5, c1, k60).".encode(),
]
# Anonymous under the worker's id (Mosquitto 2.0.11 closed the worker's connection and said nothing to it),
# under its probe's, and as a "bridge" (an MQTT 3.1.1 client setting the protocol level's bridge bit, which
# Mosquitto logs in other words: it took the session unseen, a review).
TAKEN = [
    f"1796483979: New client connected from 127.0.0.1:55829 as {WORKER} (p5, c1, k60).".encode(),
    f"1796484023: New client connected from 10.0.0.7:41857 as {WORKER}-probe (p5, c0, k10, u'monitor').".encode(),
    f"1796484024: New bridge connected from 127.0.0.1:41858 as {WORKER} (p2, c0, k10).".encode(),
]


def test_only_connections_under_ups_own_ids_by_anyone_but_its_worker_count_as_takeovers(tmp_path: Path) -> None:
    # Found by an attack: a client with the worker's id and a session expiry took the session on `up`'s
    # Mosquitto 2.0.11, which closed the worker's connection without 0x8E: 95 of 600 events lost, no alert.
    log = tmp_path / "mosquitto.log"
    log.write_bytes(b"\n".join([*CONNECTIONS, *OTHER, REFUSED]) + b"\n")
    journal = Journal(log, own_ids=[WORKER, f"{WORKER}-probe"], own_user="ingest")

    def takeovers() -> float:
        families = {family.name: family for family in journal.collect()}
        return families["eventpipe_broker_session_takeovers"].samples[0].value

    assert takeovers() == 0
    with log.open("ab") as handle:
        handle.write(b"\n".join(TAKEN) + b"\n")
    assert takeovers() == 3
    assert takeovers() == 3
    # Compose's exporter knows no worker's id: it serves the oversize counts alone, as before.
    assert [family.name for family in Journal(log).collect()] == ["eventpipe_broker_oversize_packets"]
