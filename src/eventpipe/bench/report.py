"""The benchmark's printed figures: one block per scenario, and how each compares with its target."""

from __future__ import annotations

from collections.abc import Sequence

from eventpipe.bench.download import Download
from eventpipe.bench.drain import Drain
from eventpipe.bench.endpoint import Comparison
from eventpipe.bench.latency import Latency
from eventpipe.bench.stats import percentile

LABELS = {
    "bare": "bare paho-mqtt, counts only",
    "parse": "bare paho-mqtt + json.loads",
    "worker": "eventpipe worker, into chDB",
}
DRAIN_TARGET, DRAIN_FLOOR = 0.9, 0.7
LATENCY_RATE, LATENCY_TARGET_S = 2_000.0, 1.0
API_TARGET = 1.5
WINDOWED_TARGET_S, ALL_TIME_TARGET_S = 0.150, 0.500
ALL_TIME = ("types, all time", "total count")
# Issue 15's reads have p50 targets of their own; every other windowed read is held to issue 12's.
OWN_TARGETS_S = {"feed, first page of 1000": 0.100, "breakdown by browser, 24 h": 0.300}
# Issue 15: an export of 1M events runs at 100,000 events/s or more and adds at most 100 MiB to the
# API process. A smaller one (the last 24 h of a 1M store holds about 11,000) is printed without them:
# its fixed cost weighs on its rate, and it says nothing of the memory bound.
EXPORT_TARGET, EXPORT_GROWTH_MIB, EXPORT_TARGET_EVENTS = 100_000, 100, 1_000_000


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _verdict(met: bool, floor_met: bool | None = None) -> str:
    if met:
        return "met"
    return "missed (floor met)" if floor_met else "missed"


def drain(results: Sequence[Drain], count: int) -> list[str]:
    lines = [
        f"1. Backlog drain: {count:,} QoS 1 demo events queued for each consumer's persistent session,",
        "   then drained by that consumer alone, one process (time: connect to last message counted/committed)",
        f"   {'consumer':<30} {'msg/s':>9} {'seconds':>8} {'CPU s/10k':>10} {'RSS before, peak':>21} "
        f"{'broker CPU s/10k':>17}",
    ]
    for result in results:
        memory = f"{_mib(result.rss_start)}, {_mib(result.rss_peak)}"
        lines.append(
            f"   {LABELS.get(result.kind, result.kind):<30} {result.rate:>9,.0f} {result.seconds:>8.2f} "
            f"{result.cpu_per_10k:>10.2f} {memory:>21} {result.broker_cpu_per_10k:>17.2f}"
        )
    by_kind = {result.kind: result for result in results}
    if "bare" in by_kind and "worker" in by_kind:
        ratio = by_kind["worker"].rate / by_kind["bare"].rate
        verdict = _verdict(ratio >= DRAIN_TARGET, ratio >= DRAIN_FLOOR)
        lines.append(
            f"   worker / bare paho: {ratio:.2f}x (target >= {DRAIN_TARGET}x, at least {DRAIN_FLOOR}x: {verdict})"
        )
    return lines


def cost(results: Sequence[Drain]) -> list[str]:
    worker = next((result for result in results if result.kind == "worker"), None)
    if worker is None:
        return []
    return [
        f"4. Worker cost, from the drain above: {worker.cpu_per_10k:.2f} CPU seconds per 10,000 events "
        f"(whole process: paho, parsing, chDB's insert work); peak RSS {_mib(worker.rss_peak)} "
        f"({_mib(worker.rss_start)} before draining, most of it the embedded ClickHouse engine)",
    ]


def latency(results: Sequence[Latency], poll_s: float) -> list[str]:
    lines = [
        "2. Publish -> queryable: eventpipe up (broker, worker, API on chDB); QoS 1 demo events at a fixed rate;",
        "   first unpolled (the stack's CPU per event), then samples polled with GET /events/{id} every",
        f"   {poll_s * 1000:.0f} ms until 200 (latency: an upper bound, late by up to one poll)",
        f"   {'rate':>8} {'achieved':>9} {'samples':>8} {'p50':>10} {'p99':>10} {'max':>10} {'lost':>5} "
        f"{'CPU s/10k':>10} {'polls/s':>8} {'up cores':>9} {'broker cores':>13}",
    ]
    for result in results:
        found = result.latencies
        lines.append(
            f"   {result.rate:>8,.0f} {result.achieved:>9,.0f} {len(found):>8} {_ms(percentile(found, 50)):>10} "
            f"{_ms(percentile(found, 99)):>10} {_ms(max(found, default=float('nan'))):>10} {result.lost:>5} "
            f"{result.ingest_cpu_per_10k:>10.2f} {result.polls_per_s:>8.0f} {result.stack_cores:>9.2f} "
            f"{result.broker_cores:>13.2f}"
        )
    lines.append("   (CPU s/10k: eventpipe up's one process of worker and API while unpolled; cores: CPU seconds per")
    lines.append("   second while polled, the API's answers to the polls included)")
    at_target = next((result for result in results if result.rate == LATENCY_RATE), None)
    if at_target is not None and at_target.latencies:
        p99 = percentile(at_target.latencies, 99)
        met = p99 <= LATENCY_TARGET_S and at_target.lost == 0
        lines.append(
            f"   p99 at {LATENCY_RATE:,.0f} msg/s: {p99:.3f} s (target <= {LATENCY_TARGET_S:.0f} s: {_verdict(met)})"
        )
    return lines


def api(results: Sequence[Comparison]) -> list[str]:
    """Every read at every size so far: p50 and p99 through HTTP under a live stream, the same SQL run
    directly, and the growth of the API p50 against the smallest size."""
    sizes = sorted({result.size for result in results})
    smallest = {result.name: result for result in results if result.size == sizes[0]}
    lines = [
        "3. Reads as the store grows: one client, one request at a time, the reads in turn, through HTTP while",
        "   a stream of demo events arrives over MQTT; direct = the same Reader calls, no HTTP, while the same",
        "   stream arrives over MQTT into a worker in their process",
        f"   {'events':>11} {'read':<20} {'API p50':>9} {'API p99':>9} {'direct p50':>10} {'ratio':>6} {'growth':>7}",
    ]
    for result in results:
        first = smallest[result.name].p50
        growth = f"{result.p50 / first:.2f}x" if first else "-"
        api_p50 = _ms(result.api.p50) if result.api else "-"
        api_p99 = _ms(result.api.p99) if result.api else "-"
        ratio = f"{result.ratio:.2f}x" if result.api else "-"
        lines.append(
            f"   {result.size:>11,} {result.name:<20} {api_p50:>9} {api_p99:>9} {_ms(result.direct.p50):>10} "
            f"{ratio:>6} {growth:>7}"
        )
    latest = [result for result in results if result.size == sizes[-1]]
    windowed = [r for r in latest if r.api and r.name not in ALL_TIME]
    if windowed:
        worst = max(windowed, key=lambda r: r.p50)
        over = [r for r in windowed if r.p50 > _target(r.name)]
        worst_ratio = max(r.ratio for r in latest if r.api)
        all_time = max(r.p50 for r in latest if r.name in ALL_TIME)
        missed = ", ".join(f"{r.name} {_ms(r.p50)} (target <= {_ms(_target(r.name))})" for r in over) or "none"
        lines.append(
            f"   at {sizes[-1]:,}: slowest windowed read {worst.name} {_ms(worst.p50)} "
            f"(its target <= {_ms(_target(worst.name))}); over their targets: {missed}; "
            f"all-time {_ms(all_time)} (target <= {_ms(ALL_TIME_TARGET_S)}), "
            f"API / direct worst {worst_ratio:.2f}x (target <= {API_TARGET}x)"
        )
    return lines


def _target(name: str) -> float:
    return OWN_TARGETS_S.get(name, WINDOWED_TARGET_S)


def export(results: Sequence[Download]) -> list[str]:
    """One NDJSON export of the last 24 h at each size: its rate and the server's growth meanwhile."""
    lines = ["   export of the last 24 h (NDJSON, one request, read as it streams):"]
    for result in results:
        head = f"   {result.size:>11,} {result.events:>11,} events in {result.seconds:6.1f}s = {result.rate:>9,.0f}/s"
        growth = f"server +{_mib(result.growth_bytes)}"
        if result.events >= EXPORT_TARGET_EVENTS:
            lines.append(f"{head} (target >= {EXPORT_TARGET:,}/s), {growth} (target <= {EXPORT_GROWTH_MIB} MiB)")
        else:
            lines.append(f"{head}, {growth} (the targets are for 1M events or more)")
    return lines


def scale(results: Sequence[Drain], count: int) -> list[str]:
    lines = [
        f"Scale-out: {count:,} events queued for a shared subscription ($share/...), split round-robin by",
        "   Mosquitto between the group's sessions; N processes start together, each worker on its own chDB",
        f"   {'consumer':<30} {'processes':>9} {'msg/s':>9} {'vs 1':>6} {'CPU s/10k':>10} {'broker CPU s/10k':>17}",
    ]
    single: dict[str, float] = {}
    for result in results:
        if result.processes == 1:
            single[result.kind] = result.rate
        base = single.get(result.kind)
        speedup = f"{result.rate / base:.2f}x" if base else "-"
        lines.append(
            f"   {LABELS.get(result.kind, result.kind):<30} {result.processes:>9} {result.rate:>9,.0f} {speedup:>6} "
            f"{result.cpu_per_10k:>10.2f} {result.broker_cpu_per_10k:>17.2f}"
        )
    return lines
