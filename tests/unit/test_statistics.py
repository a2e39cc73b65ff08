"""What `eventpipe up` reports of its broker's $SYS values: the names the rules read, and what it can know."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from eventpipe.stack.statistics import Statistics, reading
from eventpipe.telemetry.exporter import Unavailable


def subscribed(**options: bool) -> Statistics:
    """A reader never started: fed by hand, as if subscribed."""
    reader = Statistics("mqtt://monitor:secret@127.0.0.1:1", **options)
    reader._subscribed.set()
    return reader


@pytest.fixture
def statistics() -> Statistics:
    return subscribed()


def told(statistics: Statistics, values: dict[str, int]) -> None:
    """Messages of the broker's $SYS tree, as Mosquitto prints them: `$SYS/broker/<key>` and the number."""
    for key, value in values.items():
        statistics.take(f"$SYS/broker/{key}", str(value).encode())


def scraped(statistics: Statistics) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(statistics)
    return {sample.name: sample.value for family in registry.collect() for sample in family.samples}


def test_sessions_left_disconnected_are_the_clients_in_total_less_those_connected(statistics: Statistics) -> None:
    # Under `retain_available false` Mosquitto keeps none of its $SYS values and says one only when it
    # changes: clients/disconnected, 0 since the start, never came to a collector that subscribed later.
    # The totals of clients and of connected ones both change as it connects.
    assert "broker_clients_disconnected" not in scraped(statistics)
    statistics.take("$SYS/broker/clients/total", b"7")
    assert "broker_clients_disconnected" not in scraped(statistics), "connected clients still unknown"
    statistics.take("$SYS/broker/clients/connected", b"3")
    assert scraped(statistics)["broker_clients_disconnected"] == 4
    # Sockets that have not sent CONNECT count as connected, not in the total: below 0, as Mosquitto says it.
    statistics.take("$SYS/broker/clients/connected", b"9")
    assert scraped(statistics)["broker_clients_disconnected"] == -2


def test_counters_count_from_0_so_that_the_first_change_shows_as_an_increase(statistics: Statistics) -> None:
    # Mosquitto says a counter only once it moves: a series that began at 1 would show no increase, and
    # a first burst of messages showed no traffic (a live test, now and then).
    assert scraped(statistics)["broker_publish_messages_dropped"] == 0
    assert scraped(statistics)["broker_publish_messages_received"] == 0
    statistics.take("$SYS/broker/publish/messages/dropped", b"5")
    assert scraped(statistics)["broker_publish_messages_dropped"] == 5


def test_metrics_carry_the_names_compose_exporter_gives_them(statistics: Statistics) -> None:
    # The same rules read both stacks: a counter family would have added `_total`.
    told(
        statistics,
        {
            "store/messages/count": 120000,
            "store/messages/bytes": 9000000,
            "bytes/sent": 1549,
            "publish/messages/received": 42,
        },
    )
    registry = CollectorRegistry()
    registry.register(statistics)
    text = generate_latest(registry).decode()
    for line in [
        "broker_store_messages_count 120000.0",
        "broker_store_messages_bytes 9e+06",
        "broker_bytes_sent 1549.0",
        "broker_publish_messages_received 42.0",
        "broker_publish_messages_dropped 0.0",
    ]:
        assert f"\n{line}\n" in text, line
    assert "_total" not in text


@pytest.mark.parametrize(
    ("topic", "payload", "kept"),
    [
        ("$SYS/broker/bytes/sent", b"1549", ("bytes/sent", 1549.0)),
        ("$SYS/broker/clients/total", b"-3", ("clients/total", -3.0)),
        ("$SYS/broker/uptime", b"12 seconds", None),
        ("$SYS/broker/version", b"mosquitto version 2.0.11", None),
        ("$SYS/broker/clients/total", b"many", None),
        ("$SYS/broker/clients/total", b"nan", None),
        ("$SYS/broker/bytes/sent", b"1" * 40, None),
        ("$SYS/broker/bytes/sent", b"\xff1", None),
        ("$SYS/broker/load/bytes/sent/1min", b"2.5", None),
        ("events/clients/total", b"1", None),
    ],
)
def test_only_the_numbers_of_the_topics_reported_are_kept(
    topic: str, payload: bytes, kept: tuple[str, float] | None
) -> None:
    assert reading(topic, payload) == kept


def test_nothing_is_told_while_not_subscribed_and_gauges_are_forgotten_when_the_connection_ends(
    statistics: Statistics,
) -> None:
    # Values that may have changed unheard would be served as current, and the target would look healthy.
    told(
        statistics,
        {"clients/total": 5, "clients/connected": 3, "store/messages/count": 150, "publish/messages/dropped": 2},
    )
    statistics.forget_gauges()
    statistics._subscribed.clear()
    with pytest.raises(Unavailable):
        scraped(statistics)
    statistics._subscribed.set()
    # Counters keep their last value (a later change moves them on); gauges wait for a fresh one.
    assert scraped(statistics) == {
        "broker_publish_messages_dropped": 2,
        "broker_publish_messages_received": 0,
        "broker_publish_messages_sent": 0,
        "broker_bytes_received": 0,
        "broker_bytes_sent": 0,
    }


def test_compose_exporters_counters_wait_for_the_brokers_word_so_a_restart_shows_no_false_increase() -> None:
    # Compose's broker retains its $SYS values: an exporter that restarts hears each at once. Seeded with 0,
    # a scrape just after its SUBACK showed 0, then the broker's total: a jump the drop alert pages on.
    statistics = subscribed(seeded=False)
    assert "broker_publish_messages_dropped" not in scraped(statistics)
    statistics.take("$SYS/broker/publish/messages/dropped", b"5")
    assert scraped(statistics)["broker_publish_messages_dropped"] == 5
