"""Command-line entry point: parses arguments and hands them to a composition root."""

from __future__ import annotations

from eventpipe.cli import startup  # isort: skip  # first: a Ctrl-C may come during the imports below

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from pydantic import ValidationError

from eventpipe import __version__
from eventpipe.bench import SCENARIOS
from eventpipe.cli import argument, variables
from eventpipe.errors import EventpipeError
from eventpipe.redaction import redact

startup.loaded()


def build_parser() -> argparse.ArgumentParser:
    parser = argument.Parser(prog="eventpipe", description="MQTT -> ClickHouse -> HTTP event pipeline.")
    parser.add_argument("--version", action="version", version=f"eventpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run broker, worker and API natively on the embedded ClickHouse")
    up.add_argument(
        "--data-dir", help="where chDB and broker files live (default: EVENTPIPE_DATA_DIR, else ./.eventpipe)"
    )
    broker = up.add_mutually_exclusive_group()
    broker.add_argument(
        "--mqtt-url",
        nargs="?",
        const="",
        help="use this running broker instead of starting mosquitto; alone, the one EVENTPIPE_MQTT_URL names"
        " (which keeps its password out of `ps`)",
    )
    broker.add_argument(
        "--mqtt-port", type=argument.port(1), default=1883, help="port of the mosquitto it starts (default 1883)"
    )
    up.add_argument("--api-port", type=argument.port(0), help="HTTP API port (default: EVENTPIPE_API_PORT, else 8000)")
    up.add_argument(
        "--metrics-port",
        type=argument.port(0),
        help="port of the worker's /metrics, the API's /metrics/api and the broker's /metrics/broker "
        "(default: EVENTPIPE_METRICS_PORT, or 9464)",
    )
    up.add_argument(
        "--prometheus-port",
        type=argument.port(0),
        help="port of the Prometheus it starts when installed (default: EVENTPIPE_PROMETHEUS_PORT, else 9090; 0: none)",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="MQTT over TLS and HTTPS only, with a local CA kept in <data dir>/tls/ (clients trust its ca.pem)",
    )

    commands.add_parser(
        "worker",
        help="run the ingest worker (settings from EVENTPIPE_* variables)",
        description="Consumes EVENTPIPE_MQTT_TOPIC at EVENTPIPE_MQTT_URL and stores the events in "
        "EVENTPIPE_CLICKHOUSE_DSN, acknowledging each message once its batch is stored; serves its metrics on "
        "EVENTPIPE_METRICS_HOST:EVENTPIPE_METRICS_PORT/metrics. Settings from EVENTPIPE_* variables only "
        "(README, Configuration).",
    )
    commands.add_parser(
        "api",
        help="run the HTTP API (settings from EVENTPIPE_* variables)",
        description="Serves the events of EVENTPIPE_CLICKHOUSE_DSN on EVENTPIPE_API_HOST:EVENTPIPE_API_PORT to "
        "holders of EVENTPIPE_API_KEYS or EVENTPIPE_API_KEYS_FILE, and its metrics on "
        "EVENTPIPE_METRICS_HOST:EVENTPIPE_METRICS_PORT/metrics. Settings from EVENTPIPE_* variables only "
        "(README, Configuration).",
    )
    commands.add_parser(
        "migrate",
        help="create the DSN's database if need be, then apply pending schema migrations",
        description="Creates the database of EVENTPIPE_CLICKHOUSE_DSN if need be, then applies the schema "
        "migrations it has not had, in order; safe to run again, and after a crash. Settings from EVENTPIPE_* "
        "variables only (README, Configuration).",
    )
    commands.add_parser(
        "broker-metrics",
        help="serve a Mosquitto's $SYS statistics and oversize-packet log lines as Prometheus metrics",
        description="Subscribes to $SYS/broker/# at EVENTPIPE_MQTT_URL (a user that may read $SYS/#) and serves "
        "the values on EVENTPIPE_METRICS_HOST:EVENTPIPE_METRICS_PORT/metrics (503 while not subscribed, or "
        "subscribed and told nothing for 35 s: a user that may not read $SYS/#). Given "
        "the broker's log file (EVENTPIPE_BROKER_LOG_FILE) it also counts the lines about packets refused or "
        "dropped for their size, and keeps the file under 64 MiB. Compose's mosquitto-exporter; `eventpipe up` "
        "does the same for its own broker.",
    )
    healthcheck = commands.add_parser(
        "healthcheck",
        help="exit 0 while the worker, the API or broker-metrics on this host is healthy (the images' HEALTHCHECK)",
        description="worker: connected to the broker (its metrics endpoint says so); api: /readyz answers 200; "
        "broker-metrics: subscribed to the broker's statistics (its /metrics answers 200). "
        "Settings from EVENTPIPE_* variables, as the service reads them.",
    )
    healthcheck.add_argument(
        "service", choices=("worker", "api", "broker-metrics"), help="which service of this host to ask"
    )

    restore = commands.add_parser(
        "restore",
        help="bring a backup back (POST /admin/backups takes them): onto a stopped `eventpipe up`, or a server",
        description="Replaces every table with the backup's, after backing up what it replaces; then migrates "
        "and rebuilds the tables derived from events. Stop the workers and the API (or `eventpipe up`) first.",
    )
    target = restore.add_mutually_exclusive_group()
    target.add_argument("--data-dir", help="the data dir of a stopped `eventpipe up`; its backups are in DIR/backups")
    target.add_argument(
        "--clickhouse-dsn", help="a ClickHouse server, from its backups disk (default: EVENTPIPE_CLICKHOUSE_DSN)"
    )
    restore.add_argument("--backup", type=argument.backup_name, required=True, help="the name GET /admin/backups lists")

    publish = commands.add_parser("publish", help="publish realistic demo events")
    publish.add_argument(
        "--mqtt-url",
        help="broker URL (default: EVENTPIPE_MQTT_URL, else mqtt://127.0.0.1:1883); a password is better set there",
    )
    publish.add_argument(
        "--ca-file",
        help="for mqtts://: the CA that signed the broker's certificate (default: EVENTPIPE_MQTT_CA_FILE when the "
        "URL is EVENTPIPE_MQTT_URL's, else the system's CAs)",
    )
    publish.add_argument("--count", type=argument.positive_int, required=True, help="how many events")
    publish.add_argument(
        "--rate",
        type=argument.rate,
        default=0.0,
        help="events per second, at least 0.001 (default, or 0: as fast as possible)",
    )
    publish.add_argument("--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS (default 1)")
    publish.add_argument("--topic-prefix", type=argument.topic, default="events", help="topics are PREFIX/<event_type>")
    publish.add_argument("--seed", type=int, help="random seed, for repeatable events")

    bench = commands.add_parser(
        "bench",
        help="measure drain, latency, API and cost as ratios in one run (starts its own broker and chDB)",
        description="Prints figures; asserts none. Each scenario compares with a baseline taken in the same run.",
    )
    bench.add_argument("--quick", action="store_true", help="a smoke run of every scenario: small and short")
    bench.add_argument("--count", type=argument.positive_int, help="backlog per consumer (default 50000; quick 3000)")
    bench.add_argument(
        "--rates",
        type=argument.rates,
        help="latency rates, msg/s, comma-separated (default 500,2000,5000; quick 500,2000)",
    )
    bench.add_argument(
        "--latency-seconds", type=argument.seconds, help="publishing time per rate (default 60; quick 2)"
    )
    bench.add_argument(
        "--sizes",
        type=argument.counts,
        help="stored events at which every read is timed, comma-separated (default 1000000,10000000,100000000)",
    )
    bench.add_argument("--api-seconds", type=argument.seconds, help="time per endpoint and side (default 6; quick 0.4)")
    bench.add_argument("--scale", type=argument.counts, help="worker process counts for the scale-out (default 1,2)")
    bench.add_argument(
        "--only",
        type=argument.scenarios,
        help=f"scenarios to run, comma-separated: {','.join(SCENARIOS)} (default all)",
    )
    bench.add_argument("--work-dir", help="where the run's directory goes (default: the system's temporary dir)")
    bench.add_argument("--keep", action="store_true", help="keep the run's directory (broker and chDB files, logs)")
    bench.add_argument("--json", help="also write every figure to this JSON file")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="[fill]")
    fill = bench_commands.add_parser(
        "fill",
        help="append realistic events to the data dir that `eventpipe up --data-dir DIR` serves",
        description="Demo events over the last 90 days, about 100,000 users, new ids on every call; "
        "written through the worker's Writer in batches. Stop `eventpipe up` on that directory first.",
    )
    fill.add_argument("--data-dir", required=True, help="the data dir of `eventpipe up` (its clickhouse/ is filled)")
    fill.add_argument("--count", type=argument.positive_int, required=True, help="how many events to append")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (unknown := variables.warning(os.environ)) is not None:
        print(unknown, file=sys.stderr)
    # Imported per command: `eventpipe publish` should not pay for chDB and FastAPI.
    try:
        if args.command == "up":
            from eventpipe.stack.command import run_up

            return run_up(args)
        if args.command == "broker-metrics":
            from eventpipe.cli.broker import run_broker_metrics

            return run_broker_metrics(args)
        if args.command == "healthcheck":
            from eventpipe.cli.healthcheck import run_healthcheck

            return run_healthcheck(args)
        if args.command == "restore":
            from eventpipe.cli.restore import run_restore

            return run_restore(args)
        if args.command == "bench" and args.bench_command == "fill":
            from pathlib import Path

            from eventpipe.bench.fill import run_fill
            from eventpipe.config import Settings
            from eventpipe.stack.lock import alone

            # Not beside the `eventpipe up` that serves it: chDB said so only as a lock error of its own.
            with alone(Path(args.data_dir), "--data-dir", "then fill it", "fill"):
                # The store `eventpipe up --data-dir` serves, resolved and migrated the way it does.
                settings = Settings(data_dir=args.data_dir)
                return run_fill(settings.resolved_clickhouse_dsn, args.count, settings.retention_days)
        if args.command == "bench":
            from eventpipe.bench.command import run_bench

            return run_bench(args)
        from eventpipe.cli import service

        run = {
            "worker": service.run_worker,
            "api": service.run_api,
            "migrate": service.run_migrate,
            "publish": service.run_publish,
        }[args.command]
        return run(args)
    except ValidationError as exc:
        from eventpipe.cli.variables import settings_problem

        print(f"eventpipe {args.command}: error: {settings_problem(exc)}", file=sys.stderr)
        return 2
    except EventpipeError as exc:
        print(f"eventpipe {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # Ctrl-C where a command has no handler of its own (waiting for a data dir's lock, migrating, a
        # restore's checks): a stop the user asked for, not a crash to print a traceback for; with what
        # it left, where the command says (a restore stopped after its drop).
        left = f"; {redact(str(exc))}" if str(exc) else ""
        print(f"eventpipe {args.command}: interrupted{left}", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - reported like a crash, but redacted
        # Python's own report of a crash would print the message unredacted.
        print(redact(traceback.format_exc()), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
