"""Composition root of `eventpipe up`: broker, worker and API in one process on chDB."""

from __future__ import annotations

import argparse
import logging
from typing import TextIO

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from eventpipe.api.assembly import assemble as assemble_api
from eventpipe.api.keyring import Keyring
from eventpipe.api.server import ApiServer
from eventpipe.cli.console import setup_logging, warn_password_flag
from eventpipe.cli.shutdown import Shutdown
from eventpipe.cli.variables import settings_problem
from eventpipe.config import Settings
from eventpipe.errors import BrokerError, ConfigError
from eventpipe.heap import settle
from eventpipe.ingest.assembly import assemble
from eventpipe.ingest.probe import client_id as probe_client_id
from eventpipe.ingest.worker import Worker
from eventpipe.port import address
from eventpipe.process import raise_file_limit
from eventpipe.redaction import redact
from eventpipe.stack.access import USER, Access
from eventpipe.stack.banner import announce
from eventpipe.stack.certificate import TlsFiles, local_authority
from eventpipe.stack.credential import generated_key
from eventpipe.stack.journal import Journal
from eventpipe.stack.lock import hold, made
from eventpipe.stack.mosquitto import Mosquitto
from eventpipe.stack.permission import private_store
from eventpipe.stack.prometheus import Prometheus, default_rules_dir
from eventpipe.stack.runbook import filled_rules
from eventpipe.stack.secret import kept_secrets
from eventpipe.stack.statistics import Statistics
from eventpipe.stack.volume import Volume
from eventpipe.store.client import connect, reaching
from eventpipe.store.dsn import EMBEDDED_STORE
from eventpipe.store.migration import migrate
from eventpipe.telemetry.listener import process_registry, serve_metrics
from eventpipe.telemetry.progress import Progress

log = logging.getLogger("eventpipe")
# How long `up` waits for the worker's first connection and subscription before it gives up, saying why.
CONNECT_WAIT_S = 15.0
# After this long without it, `up` says what it waits for; it looks for a stop signal once a tick.
CONNECT_SAY_S, CONNECT_TICK_S = 2.0, 0.1
# How long `up` waits for its reader of the broker's statistics to subscribe; it goes on without.
STATISTICS_WAIT_S = 5.0


# up's flags over the settings they replace.
FLAGS = {
    "data_dir": "--data-dir",
    "mqtt_url": "--mqtt-url",
    "api_port": "--api-port",
    "metrics_port": "--metrics-port",
    "prometheus_port": "--prometheus-port",
}


def settings_from(args: argparse.Namespace) -> Settings:
    given = {field: getattr(args, field) for field in FLAGS if getattr(args, field) not in (None, "")}
    try:
        return Settings(**given)
    except ValidationError as exc:
        # A value from a flag is named by its flag: the variable would send the user to the wrong place.
        raise ConfigError(settings_problem(exc, {field: FLAGS[field] for field in given})) from None


def run_up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_level)
    # Before the API sizes its connection cap on it (a quarter of the limit, up to 1,000).
    if (short := raise_file_limit()) is not None:
        log.warning(short)
    if args.mqtt_url:
        warn_password_flag("up", "--mqtt-url", args.mqtt_url, "EVENTPIPE_MQTT_URL and give --mqtt-url alone")
    elif args.mqtt_url == "" and "mqtt_url" not in settings.model_fields_set:
        raise ConfigError("--mqtt-url alone uses the broker EVENTPIPE_MQTT_URL names, and it is not set")
    # Before the data dir is made: a path the engine's DSN cannot name was refused only once the broker
    # had started and the secrets and the API key were written into it.
    _ = settings.resolved_clickhouse_dsn
    made(settings.data_dir, "--data-dir, or EVENTPIPE_DATA_DIR")
    lock = hold(settings.data_dir)
    settings = kept_secrets(settings)
    generated = None
    if not settings.api_keys and settings.api_keys_file is None:
        generated = generated_key(settings.data_dir)
    # Before anything starts: a keys file that cannot be used stops `up` here, naming it and why.
    keyring = Keyring(settings.api_keys, settings.api_keys_file, generated[0] if generated else None)
    shutdown = Shutdown()
    shutdown.install()

    tls = None
    if args.tls:
        # Made or renewed under the lock, so two starts never write them at once.
        tls = local_authority(settings.data_dir / "tls")
        settings = settings.model_copy(update={"api_tls_cert_file": tls.cert, "api_tls_key_file": tls.key})
    broker = None
    statistics = None
    log_start = 0
    if args.mqtt_url is None:
        broker = Mosquitto(
            args.mqtt_port,
            settings.data_dir / "mosquitto",
            settings.mqtt_receive_maximum,
            settings.mosquitto_binary,
            tls=tls,
            max_payload_bytes=settings.max_payload_bytes,
            access=Access(settings.mqtt_topic, settings.probe_topic),
            session_expiry_s=settings.mqtt_session_expiry_s,
        )
        broker.start(inherit_fds=(lock.fileno(),))
        # Only what this run writes to the broker's log counts.
        log_start = broker.log_start
        shutdown.on_force = broker.terminate
        settings = settings.model_copy(update={"mqtt_url": broker.worker_url, "mqtt_ca_file": tls.ca if tls else None})
        broker.note_own_ids((settings.mqtt_session_id, probe_client_id(settings.mqtt_session_id)))
        # Its statistics, for Prometheus as compose's exporter gives them: listening before anyone else
        # connects, since Mosquitto says a value only when it changes, and only to those listening then.
        if broker.monitor_url is not None:
            statistics = Statistics(broker.monitor_url, settings.mqtt_ca_file)
            if not statistics.start(wait_s=STATISTICS_WAIT_S):
                log.warning("the broker's statistics are not read yet: its metrics are unserved until they are")
    saved = True
    try:
        code = _serve(settings, broker, shutdown, keyring, generated, lock, tls, log_start, statistics)
    finally:
        if statistics is not None:
            statistics.stop()
        if broker is not None:
            broker.await_goodbye(settings.mqtt_session_id)
            saved = broker.stop()
        lock.close()
    return code if saved else 1  # not a clean stop: the broker lost its queue


def _serve(
    settings: Settings,
    broker: Mosquitto | None,
    shutdown: Shutdown,
    keyring: Keyring,
    generated: tuple[str, bool] | None,
    lock: TextIO,
    tls: TlsFiles | None,
    log_start: int,
    statistics: Statistics | None,
) -> int:
    dsn = settings.resolved_clickhouse_dsn
    if not settings.clickhouse_dsn:
        private_store(settings.data_dir)  # the data dir's own engine: a DSN given names another's
    with reaching(dsn, settings.clickhouse_dsn_setting):
        migrator = connect(dsn)
        migrate(migrator, settings.retention_days)
        migrator.close()
    # Two registries, as in containers, so rules and dashboards see the same jobs: the worker's on
    # --metrics-port, and the API's there too, on a path of its own (never on the API's port).
    registry = process_registry()  # one process: its CPU and memory are reported once, here
    api_registry = CollectorRegistry()
    # And the broker's, on a third path, as compose's exporter serves them (job "mosquitto"): its statistics
    # and what its log says of packets refused or dropped for their size.
    broker_registry, journal = None, None
    if broker is not None:
        broker_registry, journal = CollectorRegistry(), Journal(broker.log_file, log_start, broker.own_ids, USER)
        broker_registry.register(journal)
        if statistics is not None:
            broker_registry.register(statistics)
    metrics_server = serve_metrics(
        registry,
        settings.metrics_host,
        settings.metrics_port,
        api=api_registry,
        broker=broker_registry,
        flag="--metrics-port",
    )
    if not settings.clickhouse_dsn:
        registry.register(Volume(settings.data_dir / EMBEDDED_STORE))
    with reaching(dsn, settings.clickhouse_dsn_setting):
        worker, prober = assemble(settings, registry)
    api = assemble_api(settings, api_registry, keyring)
    settle()
    rules = settings.prometheus_rules_dir or default_rules_dir()
    no_rules: str | None = None
    if settings.prometheus_port:
        # A copy of the rules whose runbook links open (EVENTPIPE_RUNBOOK_URL), beside Prometheus' data;
        # none when Prometheus is off, so its rules and links cannot stop a stack that does not run it.
        copy = settings.data_dir / "prometheus" / "rules"
        try:
            rules = filled_rules(rules, copy, settings.runbook_url)
        except (OSError, UnicodeError) as exc:
            # Prometheus is an optional extra: rules it cannot be given skip it, as a missing binary does.
            why = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
            writing = isinstance(exc, OSError) and str(exc.filename or "").startswith(str(copy.parent))
            no_rules = (
                f"cannot write the copy of its rules in {copy} (--data-dir, or EVENTPIPE_DATA_DIR): {why}"
                if writing
                else f"cannot copy its rules from {rules} (EVENTPIPE_PROMETHEUS_RULES_DIR) to {copy}: {why}"
            )
    prometheus: Prometheus | None = None
    problem: str | None = None

    def serve() -> str | None:
        """Open the API and Prometheus, say so, and run until a signal or a problem (returned)."""
        nonlocal settings, prometheus
        api.start(flag="--api-port")
        # Port 0 is any free port: the banner and Prometheus' targets name the ones bound.
        settings = settings.model_copy(update={"api_port": api.port, "metrics_port": metrics_server.port})
        prometheus = Prometheus(
            settings.prometheus_port,
            settings.data_dir / "prometheus",
            # Reached where EVENTPIPE_METRICS_HOST makes it listen (a wildcard through the loopback).
            address(settings.metrics_host, settings.metrics_port),
            rules,
            broker=broker_registry is not None,
        )
        skipped = no_rules or prometheus.start(inherit_fds=(lock.fileno(),))
        if skipped:
            # Not installed or turned off is a choice; a port taken or a binary that fails is not (the SLOs'
            # rules and alerts then run nowhere).
            log.log(
                logging.WARNING if no_rules or prometheus.expected() else logging.INFO,
                "Prometheus not started: %s",
                skipped,
            )
        # Producers are told the broker's anonymous URL, never the worker's.
        mqtt_url = broker.url if broker is not None else settings.mqtt_url
        announce(settings, mqtt_url, api.url, None if skipped else prometheus.url, generated, tls)
        progress = Progress(registry)
        watched = None if skipped else prometheus

        def check() -> str | None:
            nonlocal watched
            progress.report()
            if broker is not None and journal is not None:
                broker.set_aside_log(before=journal.catch_up)
            if watched is not None and not watched.running():
                # Not a reason to stop ingest and the API, but the alerts the README points to are gone:
                # it died silently, a zombie until `up` exited.
                log.error(
                    "Prometheus exited (see %s): no alerts or rule data until eventpipe up is restarted; "
                    "ingest and the API go on",
                    watched.directory / "prometheus.stderr",
                )
                watched = None
            return _health(worker, broker, api)

        return shutdown.wait(check)

    try:
        worker.start()
        prober.start()
        # In ticks, so that a stop signal is looked at meanwhile: a broker out of reach held it for the whole wait.
        for tick in range(round(CONNECT_WAIT_S / CONNECT_TICK_S)):
            if worker.consumer.wait_connected(CONNECT_TICK_S) or shutdown.requested():
                break
            if tick == round(CONNECT_SAY_S / CONNECT_TICK_S):  # silent, `up` looked hung while paho retried
                log.info("waiting for the MQTT broker at %s (%g s at most)", redact(settings.mqtt_url), CONNECT_WAIT_S)
        else:
            raise BrokerError(
                worker.consumer.failure
                or f"could not connect and subscribe to the MQTT broker at {redact(settings.mqtt_url)} "
                f"within {CONNECT_WAIT_S:g}s"
                + ("" if broker is not None else " (--mqtt-url, or EVENTPIPE_MQTT_URL)")
            )
        if broker is not None and not worker.consumer.resumed:
            # The worker's session and subscription on disk now, not at the first autosave: a broker
            # killed before that came back without them and dropped what producers sent meanwhile. A
            # session resumed at this start came from that file; saving it again, behind a backlog of
            # 60 KB events, held the start 11 s while the broker wrote 2.9 GB and served no one.
            broker.save(stop=shutdown.requested)
        # A stop asked for while starting (a supervisor's timeout, Ctrl-C): no API is opened and no banner
        # prints its key; the worker still commits what it took. (wait returns at once, saying which signal.)
        problem = shutdown.wait(lambda: None) if shutdown.requested() else serve()
        if problem:
            log.error("stopping: %s", problem)
    finally:
        api.stop()
        if prometheus is not None:
            prometheus.stop()
        prober.stop()
        clean = worker.stop()
        metrics_server.shutdown()
    if clean and not problem:
        log.info("stopped cleanly: everything received was committed and acknowledged")
        return 0
    return 1


def _health(worker: Worker, broker: Mosquitto | None, api: ApiServer) -> str | None:
    problem = worker.problem()
    if problem:
        return problem
    if broker is not None and not broker.running():
        return f"mosquitto exited; see {broker.log_file}"
    if not api.alive:
        return "the API server stopped"
    return None
