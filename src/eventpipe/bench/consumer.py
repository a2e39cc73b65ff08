"""One consumer draining its backlog, in a process of its own: `python -m eventpipe.bench.consumer KIND`.

Kinds: `bare` (paho-mqtt that only counts, acking as paho does by default:
the reference), `parse` (bare plus json.loads, for context), `worker`
(eventpipe's worker as `eventpipe worker` assembles it, onto chDB in --data-dir, without probes).
With --go it sets up, prints "ready" and starts on a line from stdin, so that
several start together. It stops at --count messages counted (bare, parse) or
committed (worker), or with --count 0 once nothing more came for IDLE_S.
Prints one JSON line: the count, the seconds from connect to the last message
counted or committed, the process's CPU seconds over that span, and its
resident memory at the start and at its peak.

A process per consumer: the GIL and the allocator are per process, as in
production, and the figures are the process's own (getrusage).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventpipe.process import rss_bytes

KINDS = ("bare", "parse", "worker")
IDLE_S = 1.5
NOTHING_S = 30.0
POLL_S = 0.005


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _wait(progress: Callable[[], int], count: int, started: float, timeout: float) -> tuple[int, float]:
    """Poll `progress` until it reaches `count` (or, for 0, stops moving); return (count, seconds to the last move)."""
    seen, moved = 0, started
    while True:
        now = time.perf_counter()
        current = progress()
        if current != seen:
            seen, moved = current, now
        if (count and seen >= count) or (not count and seen and now - moved >= IDLE_S):
            return seen, moved - started
        if not count and not seen and now - started > NOTHING_S:
            return 0, 0.0  # this session's share never came: the caller's total shows it
        if now - started > timeout:
            raise SystemExit(f"only {seen} of {count or 'the backlog'} within {timeout:.0f}s")
        time.sleep(POLL_S)


def _go(wait: bool) -> None:
    if wait:
        print("ready", flush=True)
        sys.stdin.readline()


def drain_bare(args: argparse.Namespace) -> tuple[int, float, float, int]:
    """Count messages on the existing session, auto-acked by paho; return (count, seconds, cpu, rss before)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from eventpipe.mqtt.address import MqttAddress
    from eventpipe.mqtt.connection import make_client

    address = MqttAddress.parse(args.url)
    client = make_client(address, args.client_id)
    seen = [0]
    loads = json.loads
    parse = args.kind == "parse"

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        if parse:
            loads(message.payload)
        seen[0] += 1

    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = args.receive_maximum
    _go(args.go)
    rss_start = rss_bytes()
    cpu_start = _cpu_s()
    started = time.perf_counter()
    client.connect(address.host, address.port, clean_start=False, properties=props)
    client.loop_start()
    try:
        count, seconds = _wait(lambda: seen[0], args.count, started, args.timeout)
        cpu = _cpu_s() - cpu_start
    finally:
        client.disconnect()
        client.loop_stop()
    return count, seconds, cpu, rss_start


def drain_worker(args: argparse.Namespace) -> tuple[int, float, float, int]:
    """Run the worker on the session until its backlog is committed; return (count, seconds, cpu, rss before)."""
    from prometheus_client import CollectorRegistry

    from eventpipe.config import Settings
    from eventpipe.heap import settle
    from eventpipe.ingest.assembly import assemble
    from eventpipe.store.client import connect
    from eventpipe.store.migration import migrate

    settings = Settings(
        mqtt_url=args.url,
        clickhouse_dsn=f"chdb://{args.data_dir.resolve()}",
        mqtt_client_id=args.client_id,
        mqtt_receive_maximum=args.receive_maximum,
        mqtt_share_group=args.share_group,
        # No probes: the figures count the backlog's messages, and only them.
        probe_interval_s=0,
        # The session the backlog was queued for is named without one, as the bench runs.
        mqtt_session_secret=None,
    )
    migrator = connect(settings.resolved_clickhouse_dsn)
    migrate(migrator)
    migrator.close()
    registry = CollectorRegistry()
    ingest = assemble(settings, registry)
    settle()  # as `eventpipe worker` does

    def stored() -> int:
        # Polled, not hooked: the worker runs exactly as in production.
        return int(registry.get_sample_value("eventpipe_events_stored_total") or 0)

    _go(args.go)
    rss_start = rss_bytes()
    cpu_start = _cpu_s()
    started = time.perf_counter()
    ingest.start()
    try:
        count, seconds = _wait(stored, args.count, started, args.timeout)
        cpu = _cpu_s() - cpu_start
        # Not timed: the last acks, so the broker's queue is really empty afterwards.
        _wait(lambda: int(registry.get_sample_value("eventpipe_messages_acked_total") or 0), count, started, 60)
    finally:
        ingest.stop()
    return count, seconds, cpu, rss_start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventpipe.bench.consumer")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--count", type=int, default=0, help="stop at this many; 0: once idle")
    # EVENTPIPE_MQTT_RECEIVE_MAXIMUM's default, spelled out: the bare consumers import no settings.
    parser.add_argument("--receive-maximum", type=int, default=40_000)
    parser.add_argument("--data-dir", type=Path, help="chDB directory (worker)")
    parser.add_argument("--share-group", default="", help="the worker subscribes as $share/GROUP/events/#")
    parser.add_argument("--go", action="store_true", help="print ready, start on a line from stdin")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    count, seconds, cpu, rss_start = (drain_worker if args.kind == "worker" else drain_bare)(args)
    result = {
        "kind": args.kind,
        "count": count,
        "seconds": seconds,
        "cpu_s": cpu,
        "rss_start": rss_start,
        "rss_peak": _peak_rss_bytes(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
