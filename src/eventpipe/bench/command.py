"""`eventpipe bench`: runs the scenarios in turn and prints their figures as they come.

Nothing here asserts a figure: on a shared machine absolute numbers drift, so
every scenario is a comparison taken in the same run (worker against bare
paho, API against its own SQL), and the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from eventpipe.bench import SCENARIOS, child, drain, endpoint, latency, machine, report, service
from eventpipe.bench.client import ApiClient
from eventpipe.bench.download import Download
from eventpipe.config import Settings
from eventpipe.errors import ConfigError
from eventpipe.port import free_port
from eventpipe.process import cpu_seconds, interrupted_by, pid_running
from eventpipe.stack.mosquitto import Mosquitto

POLL_S = 0.02
SAMPLES_PER_S = 10.0


@dataclass(frozen=True)
class Plan:
    """How much each scenario does; --quick shrinks everything to a smoke run."""

    count: int
    rates: tuple[float, ...]
    latency_seconds: float
    quiet_seconds: float
    sizes: tuple[int, ...]
    api_seconds: float
    scale: tuple[int, ...]
    scenarios: tuple[str, ...]
    keep: bool = False  # each size's store is kept for a look afterwards (it can be large)

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        quick = args.quick
        default_sizes = (20_000, 60_000) if quick else (1_000_000, 10_000_000, 100_000_000)
        return cls(
            count=args.count or (3_000 if quick else 50_000),
            rates=args.rates or ((500.0, 2_000.0) if quick else (500.0, 2_000.0, 5_000.0)),
            latency_seconds=args.latency_seconds or (2.0 if quick else 60.0),
            quiet_seconds=1.0 if quick else 5.0,
            # Each size once: with --keep a size given twice refilled its kept store, measured again under
            # the same label at twice the events.
            sizes=tuple(sorted(set(args.sizes))) if args.sizes else default_sizes,
            api_seconds=args.api_seconds or (0.4 if quick else 6.0),
            scale=args.scale or (1, 2),
            scenarios=args.only or SCENARIOS,
            keep=args.keep,
        )


def run_bench(args: argparse.Namespace) -> int:
    with interrupted_by(signal.SIGTERM):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    plan = Plan.of(args)
    figures_file = _writable(Path(args.json)) if args.json else None
    settings = child.settings()
    window = settings.mqtt_receive_maximum
    # A fresh directory of our own, inside --work-dir if given: only it is removed afterwards.
    try:
        if args.work_dir:
            Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="eventpipe-bench-", dir=args.work_dir))
    except OSError as exc:  # a regular file there was a FileExistsError traceback
        where = args.work_dir or tempfile.gettempdir()
        raise ConfigError(f"cannot make the run's directory in {where}: {exc.strerror} (--work-dir)") from None
    figures: dict[str, Any] = {"machine": machine.describe(), "load_start": machine.load(), "plan": asdict(plan)}
    say = _printer()
    say("eventpipe bench: figures from one run on one machine; compare the ratios, not the absolutes")
    say(f"machine: {figures['machine']}")
    say(f"load average at start: {figures['load_start']}; work dir: {work}")
    if args.quick:
        say("quick run: small and short, a smoke test; the targets are meant for the default sizes")
    started = time.monotonic()
    try:
        if "drain" in plan.scenarios or "scale" in plan.scenarios:
            figures |= _drains(plan, work, settings, say)
        if "latency" in plan.scenarios:
            figures["latency"] = _latency(plan, work, window, say)
        if "api" in plan.scenarios:
            figures["api"], figures["export"] = _api(plan, work, settings, say)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures["load_end"] = machine.load()
    say("")
    say(f"load average at end: {figures['load_end']}; {time.monotonic() - started:.0f}s in all")
    if figures_file is not None:
        try:
            figures_file.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        except OSError as exc:
            raise _unwritable(figures_file, exc) from exc
    return 0


def _writable(path: Path) -> Path:
    """`path`, once a file could be written there: a folder that did not exist was a traceback at the end
    of the run, its figures lost. A file made only to find out is removed again."""
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    if not existed:
        path.unlink()
    return path


def _unwritable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot write the figures to {path} (--json): {exc.strerror or exc}")


def _printer() -> Callable[[str], None]:
    def say(line: str) -> None:
        print(line, flush=True)

    return say


def _broker(settings: Settings, directory: Path) -> Mosquitto:
    """A broker of the bench's own, configured as `eventpipe up` configures its own."""
    return Mosquitto(
        free_port(),
        directory,
        settings.mqtt_receive_maximum,
        settings.mosquitto_binary,
        max_payload_bytes=settings.max_payload_bytes,
        session_expiry_s=settings.mqtt_session_expiry_s,
    )


def _drains(plan: Plan, work: Path, settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    window = settings.mqtt_receive_maximum
    broker = _broker(settings, work / "mosquitto")
    broker.start()
    config = str(broker.directory / "mosquitto.conf")
    pid = pid_running("-c", config)

    def broker_cpu() -> float:
        return cpu_seconds(pid) if pid else 0.0

    try:
        if "drain" in plan.scenarios:
            results = drain.compare(broker.url, plan.count, window, work, ("bare", "parse", "worker"), broker_cpu)
            say("")
            for line in report.drain(results, plan.count) + report.cost(results):
                say(line)
            out["drain"] = [asdict(result) | {"rate": result.rate} for result in results]
        if "scale" in plan.scenarios:
            scaled = [
                drain.scale(broker.url, plan.count, window, work, kind, processes, broker_cpu)
                for kind in ("worker", "bare")
                for processes in plan.scale
            ]
            say("")
            for line in report.scale(scaled, plan.count):
                say(line)
            out["scale"] = [asdict(result) | {"rate": result.rate} for result in scaled]
    finally:
        broker.stop()
    return out


def _latency(plan: Plan, work: Path, window: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    key = secrets.token_urlsafe(16)
    with contextlib.ExitStack() as cleanup:
        stack, mqtt_port, api_port = service.up(work / "up", key, window, cleanup)
        client = ApiClient(api_port, key)
        cleanup.callback(client.close)
        url = f"mqtt://127.0.0.1:{mqtt_port}"
        client.wait_ready()
        broker_config = (work / "up" / "mosquitto" / "mosquitto.conf").resolve()
        pids = (stack.process.pid, pid_running("-c", str(broker_config)) or 0)
        cpu = (lambda: cpu_seconds(pids[0]), lambda: cpu_seconds(pids[1]))
        # Warm-up, not reported: first queries, first inserts, first parts.
        latency.measure(url, client, 200.0, (0.5, 1.0), SAMPLES_PER_S, POLL_S, cpu)
        phases = (plan.quiet_seconds, plan.latency_seconds)
        results = [latency.measure(url, client, rate, phases, SAMPLES_PER_S, POLL_S, cpu) for rate in plan.rates]
    say("")
    for line in report.latency(results, POLL_S):
        say(line)
    return [asdict(result) for result in results]


def _api(
    plan: Plan, work: Path, settings: Settings, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reads' figures, then the exports'."""
    # The direct side's stream comes through brokers like `up`'s (bench.inflow).
    return _reads(plan, work, settings.mqtt_receive_maximum, partial(_broker, settings), say)


def _reads(
    plan: Plan, work: Path, window: int, broker: endpoint.Broker, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each size in turn: fill, compare, print everything so far."""
    results: list[endpoint.Comparison] = []
    exports: list[Download] = []
    for size in plan.sizes:
        # A store of its own per size, filled oldest first, as that many events
        # arriving over 90 days would have left it. Appending to the previous
        # size instead would lay a second 90 days over the first: a backfill,
        # whose overlapping parts FINAL must merge until ClickHouse has.
        data_dir = work / f"reads-{size}"
        seconds = endpoint.fill(data_dir, size)
        say(f"   (filled {size:,} events in {seconds:.1f}s, {size / seconds if seconds else 0:,.0f}/s)")
        try:
            compared, exported = endpoint.compare(data_dir, size, plan.api_seconds, window, broker)
            results += compared
            exports.append(exported)
        finally:
            if not plan.keep:
                shutil.rmtree(data_dir, ignore_errors=True)
        say("")
        for line in [*report.api(results), *report.export(exports)]:
            say(line)
    reads = [asdict(result) | {"ratio": result.ratio} for result in results]
    return reads, [asdict(exported) | {"rate": exported.rate} for exported in exports]
