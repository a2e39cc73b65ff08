"""Composition roots of the single-purpose commands: worker, api, migrate, publish."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal

from pydantic import ValidationError

from eventpipe.cli.console import setup_logging, warn_password_flag
from eventpipe.cli.shutdown import Shutdown
from eventpipe.cli.variables import settings_problem
from eventpipe.config import Settings
from eventpipe.errors import BrokerError, ConfigError
from eventpipe.heap import settle
from eventpipe.ingest.assembly import assemble
from eventpipe.mqtt.replica import named
from eventpipe.port import address
from eventpipe.process import interrupted_by, raise_file_limit
from eventpipe.producer.publisher import publish_demo
from eventpipe.redaction import redact
from eventpipe.stack.lock import alone, data_dir_of
from eventpipe.store.client import connect, reaching
from eventpipe.store.database import create_database
from eventpipe.store.dsn import embedded, embedded_dsn
from eventpipe.store.migration import migrate
from eventpipe.telemetry.listener import process_registry, serve_metrics
from eventpipe.telemetry.progress import Progress

log = logging.getLogger("eventpipe")


def _own_store(settings: Settings, then: str, holder: str) -> contextlib.AbstractContextManager[object]:
    """The data dir's lock while a command works on its embedded store (EVENTPIPE_CLICKHOUSE_DSN empty, or
    naming that store): chDB lets one process open a store, and beside `eventpipe up` the command failed with
    the engine's lock error, blamed on EVENTPIPE_CLICKHOUSE_DSN, which was not set. Another store needs none."""
    dsn = settings.clickhouse_dsn
    if dsn and not (embedded(dsn) and dsn == embedded_dsn(settings.data_dir)):
        kept = data_dir_of(dsn)
        return contextlib.nullcontext() if kept is None else alone(kept, "EVENTPIPE_CLICKHOUSE_DSN", then, holder)
    return alone(settings.data_dir, "EVENTPIPE_DATA_DIR", then, holder)


def run_worker(_args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    with _own_store(settings, "or let its own worker take the messages", "worker"):
        return _work(settings)


def _work(settings: Settings) -> int:
    if (short := raise_file_limit()) is not None:
        log.warning(short)
    settings = named(settings)  # in a compose replica, its container's name
    if settings.mqtt_session_secret is None:
        raise ConfigError(
            "EVENTPIPE_MQTT_SESSION_SECRET is not set: without it any client that knows the worker's name "
            "can take over its broker session; set 32+ random characters (openssl rand -hex 32), the same at "
            "every start (scripts/init-secrets.sh makes one for compose)"
        )
    registry = process_registry()
    metrics_server = serve_metrics(registry, settings.metrics_host, settings.metrics_port)
    with reaching(settings.resolved_clickhouse_dsn, settings.clickhouse_dsn_setting):
        ingest = assemble(settings, registry)
    settle()
    shutdown = Shutdown()
    shutdown.install()
    ingest.start()
    log.info(
        "worker consuming %s from %s into %s",
        settings.subscription.shown,
        redact(settings.mqtt_url),
        redact(settings.resolved_clickhouse_dsn),
    )
    progress = Progress(registry)

    def check() -> str | None:
        progress.report()
        return ingest.worker.problem()

    problem = shutdown.wait(check)
    clean = ingest.stop()
    metrics_server.shutdown()
    if problem is not None:
        # The last line, which the runbooks send the operator to (it was "worker consuming ...").
        log.error("stopped: %s", problem)
    return 0 if clean and problem is None else 1


def run_api(_args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    with _own_store(settings, "or use the API it serves (its ready line names the port)", "api"):
        return _serve(settings)


def _serve(settings: Settings) -> int:
    from eventpipe.api.assembly import assemble
    from eventpipe.api.keyring import Keyring

    if (short := raise_file_limit()) is not None:
        log.warning(short)
    if not settings.api_keys and settings.api_keys_file is None:
        # An API that admits nobody is useless and one that admits everybody
        # is a leak: refuse to start and say what to set.
        raise ConfigError(
            "EVENTPIPE_API_KEYS is empty and EVENTPIPE_API_KEYS_FILE is not set: "
            "set one or more comma-separated keys, or a keys file"
        )
    keyring = Keyring(settings.api_keys, settings.api_keys_file)  # a file that cannot be used stops it here
    registry = process_registry()
    server = assemble(settings, registry, keyring)
    settle()
    # On a listener of its own, as the worker's: on the API's port every key read every other key's name,
    # request counts and the dead-letter backlog that /dead-letters refuses a scoped key. Once every
    # setting has been checked (the TLS pair above), so that a port is taken only by a process that runs.
    metrics_server = serve_metrics(registry, settings.metrics_host, settings.metrics_port)
    shutdown = Shutdown("answering the requests in flight and stopping")
    shutdown.install()
    server.start()
    log.info(
        "API serving on %s, its metrics on http://%s/metrics",
        server.url,
        address(settings.metrics_host, metrics_server.port),
    )
    problem = shutdown.wait(lambda: None if server.alive else "the API server stopped")
    server.stop()
    metrics_server.shutdown()
    if problem is not None:
        log.error("stopped: %s", problem)
    return 0 if problem is None else 1


def run_migrate(_args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    with (
        _own_store(settings, "then migrate (`eventpipe up` migrates its store at every start)", "migrate"),
        reaching(settings.resolved_clickhouse_dsn, settings.clickhouse_dsn_setting),
    ):
        create_database(settings.resolved_clickhouse_dsn)  # the migrations make their tables inside it
        applied = migrate(connect(settings.resolved_clickhouse_dsn), settings.retention_days)
    print(f"migrations applied: {applied or 'none, schema is current'}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    # The broker and its CA as the worker's variables name them, unless the flags say otherwise:
    # EVENTPIPE_MQTT_URL keeps a producer's password out of `ps` and the shell's history. A URL
    # given as a flag takes its CA from the flag alone: the variables' CA is for the variables' URL.
    flags: dict[str, object] = {}
    if args.mqtt_url:
        flags |= {"mqtt_url": args.mqtt_url, "mqtt_ca_file": args.ca_file or None}
    elif args.ca_file:
        flags["mqtt_ca_file"] = args.ca_file
    try:
        settings = Settings(**flags)  # type: ignore[arg-type]
    except ValidationError as exc:
        given = {field: {"mqtt_url": "--mqtt-url", "mqtt_ca_file": "--ca-file"}[field] for field in flags}
        raise ConfigError(settings_problem(exc, given)) from None
    setup_logging("WARNING")
    if args.mqtt_url:
        warn_password_flag("publish", "--mqtt-url", args.mqtt_url, "EVENTPIPE_MQTT_URL")
    try:
        # SIGTERM (what `timeout` and supervisors send) stops it as Ctrl-C does, with its report: it killed the
        # process without saying how many events the broker had taken.
        with interrupted_by(signal.SIGTERM):
            report = publish_demo(
                settings.mqtt_url,
                args.count,
                rate=args.rate,
                qos=args.qos,
                topic_prefix=args.topic_prefix,
                seed=args.seed,
                ca_file=settings.mqtt_ca_file,
            )
    except BrokerError as exc:
        # Which setting chose that broker: a default or a forgotten variable read as "the broker is down".
        if args.mqtt_url:
            source = "--mqtt-url"
        elif "mqtt_url" in settings.model_fields_set:
            source = "EVENTPIPE_MQTT_URL"
        else:
            source = "the default: pass --mqtt-url, or set EVENTPIPE_MQTT_URL"
        raise BrokerError(f"{exc} ({source})") from exc
    # QoS 0 has no acknowledgement: the count is of messages handed to the socket.
    outcome = (
        f"{report.acknowledged} acknowledged by the broker (QoS 1)" if args.qos else "sent at QoS 0, unacknowledged"
    )
    if report.refused:
        outcome += f", {report.refused} refused ({report.refusal}: is the user allowed to publish there?)"
    print(
        f"published {report.published} events to {redact(settings.mqtt_url)} in {report.seconds:.2f}s "
        f"({report.rate:.0f}/s), {outcome}{'; interrupted before --count' if report.interrupted else ''}"
    )
    if report.interrupted:
        return 130  # the shell's code for a stop by SIGINT
    return 0 if report.acknowledged == report.published else 1
