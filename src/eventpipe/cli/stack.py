"""Composition root of `eventpipe up`: broker, worker and API in one process on chDB."""

from __future__ import annotations

import argparse
import fcntl
import logging
import secrets
import time
from pathlib import Path
from typing import TextIO

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from eventpipe.api.app import create_app
from eventpipe.api.keyring import Keyring
from eventpipe.api.maintenance import admin
from eventpipe.broker.journal import Journal
from eventpipe.broker.mosquitto import Mosquitto
from eventpipe.broker.session import kept_file, kept_secret
from eventpipe.certificate import TlsFiles, local_authority
from eventpipe.cli.credential import FILE_NAME, generated_key
from eventpipe.cli.runtime import Progress, Shutdown, process_registry, serve_metrics, setup_logging
from eventpipe.cli.server import ApiServer
from eventpipe.config import Settings
from eventpipe.errors import BrokerError, ConfigError
from eventpipe.ingest.metrics import IngestMetrics
from eventpipe.ingest.probe import Prober
from eventpipe.ingest.worker import Worker
from eventpipe.monitor.prometheus import Prometheus, default_rules_dir
from eventpipe.redaction import redact
from eventpipe.runbook import filled_rules
from eventpipe.store.backup import Backups
from eventpipe.store.client import connect
from eventpipe.store.migration import migrate
from eventpipe.store.reader import Reader
from eventpipe.store.writer import Writer

log = logging.getLogger("eventpipe")
# Under the data dir, when EVENTPIPE_MQTT_SESSION_SECRET is not set.
SESSION_KEY_FILE = "mqtt-session-secret"
CURSOR_KEY_FILE = "cursor-secret"
# Under the data dir, when EVENTPIPE_ERASURE_SECRET is not set: the audit's hashes need the same key at every start.
ERASURE_KEY_FILE = "erasure-secret"


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    if args.mqtt_url:
        overrides["mqtt_url"] = args.mqtt_url
    if args.api_port is not None:
        overrides["api_port"] = args.api_port
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.prometheus_port is not None:
        overrides["prometheus_port"] = args.prometheus_port
    return Settings(**overrides)  # type: ignore[arg-type]


def run_up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(settings.data_dir)
    if settings.mqtt_session_secret is None:
        # Kept beside the broker's persistence: the session and the secret that names it live and go together.
        secret = kept_secret(settings.data_dir / SESSION_KEY_FILE)
        settings = settings.model_copy(update={"mqtt_session_secret": SecretStr(secret)})
    if settings.cursor_secret is None:
        # Kept too, so a restart does not end every cursor walk and feed sync in progress with a 422.
        cursor_secret = kept_file(settings.data_dir / CURSOR_KEY_FILE, secrets.token_hex(32))
        settings = settings.model_copy(update={"cursor_secret": SecretStr(cursor_secret)})
    if settings.erasure_secret is None:
        secret = kept_secret(settings.data_dir / ERASURE_KEY_FILE)
        settings = settings.model_copy(update={"erasure_secret": SecretStr(secret)})
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
    log_start = 0
    if not args.mqtt_url:
        broker = Mosquitto(
            args.mqtt_port,
            settings.data_dir / "mosquitto",
            settings.mqtt_receive_maximum,
            settings.mosquitto_binary,
            tls=tls,
            max_payload_bytes=settings.max_payload_bytes,
        )
        broker.start(inherit_fds=(lock.fileno(),))
        # The log is kept across restarts: only what this run writes counts.
        log_start = broker.log_file.stat().st_size if broker.log_file.exists() else 0
        shutdown.on_force = broker.terminate
        settings = settings.model_copy(update={"mqtt_url": broker.url, "mqtt_ca_file": tls.ca if tls else None})
    try:
        return _serve(settings, broker, shutdown, keyring, generated, lock, tls, log_start)
    finally:
        if broker is not None:
            _await_goodbye(broker, settings.mqtt_session_id, log_start)
            broker.stop()
        lock.close()


def _await_goodbye(broker: Mosquitto, client_id: str, log_start: int, timeout: float = 3.0) -> None:
    """Wait, briefly, until the broker has read the worker's DISCONNECT, and so every ack before it.

    The worker's last acks leave its socket just before the broker is told to
    stop, and Mosquitto can exit on SIGTERM before it has handled them (seen
    even after answering a connection opened later): their messages would come
    back on the next start. Its log line is the one sign that it has.
    """
    goodbye = f"Client {client_id} disconnected".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and broker.running():
        try:
            with broker.log_file.open("rb") as handle:
                handle.seek(log_start)
                if goodbye in handle.read():
                    return
        except OSError:
            return
        time.sleep(0.02)
    log.debug("the broker did not log the worker's disconnect within %.0fs; stopping it anyway", timeout)


def _lock(data_dir: Path, wait_s: float = 10.0) -> TextIO:
    """Hold an exclusive lock on the data dir: chDB and the broker's files allow one user.

    The children inherit it, so after a crash it is free only once they are
    gone too; a restart right after waits that long for them.
    """
    handle = (data_dir / ".lock").open("w")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise ConfigError(
                    f"{data_dir.resolve()} is in use by another `eventpipe up`: stop it, or pass another --data-dir"
                ) from None
            time.sleep(0.1)


def _serve(
    settings: Settings,
    broker: Mosquitto | None,
    shutdown: Shutdown,
    keyring: Keyring,
    generated: tuple[str, bool] | None,
    lock: TextIO,
    tls: TlsFiles | None,
    log_start: int,
) -> int:
    dsn = settings.resolved_clickhouse_dsn
    migrator = connect(dsn)
    migrate(migrator, settings.retention_days)
    migrator.close()
    # Two registries, as in containers: the worker's on --metrics-port, the
    # API's on its own /metrics, so rules and dashboards see the same jobs.
    registry = process_registry()  # one process: its CPU and memory are reported once, here
    metrics_server = serve_metrics(registry, settings.metrics_host, settings.metrics_port)
    metrics = IngestMetrics(registry)
    if broker is not None:
        registry.register(Journal(broker.log_file, log_start))
    worker = Worker(settings, Writer(connect(dsn)), metrics)
    prober = Prober(settings, metrics)
    app = create_app(
        Reader(connect(dsn)),
        CollectorRegistry(),
        keyring,
        settings.cursor_secret.get_secret_value() if settings.cursor_secret else "",
        backups=Backups(connect(dsn)),
        admin=admin(settings),
    )
    api = ApiServer(app, settings.api_host, settings.api_port, settings.api_tls_cert_file, settings.api_tls_key_file)
    prometheus = Prometheus(
        settings.prometheus_port,
        settings.data_dir / "prometheus",
        settings.metrics_port,
        settings.api_port,
        # A copy of the rules whose runbook links open (EVENTPIPE_RUNBOOK_URL), beside Prometheus' data.
        filled_rules(
            settings.prometheus_rules_dir or default_rules_dir(),
            settings.data_dir / "prometheus" / "rules",
            settings.runbook_url,
        ),
        tls.ca if tls else None,
    )
    problem: str | None = None
    try:
        worker.start()
        prober.start()
        if not worker.consumer.wait_connected(15):
            raise BrokerError(
                worker.consumer.failure
                or f"could not connect and subscribe to the MQTT broker at {redact(settings.mqtt_url)} within 15s"
            )
        api.start()
        skipped = prometheus.start(inherit_fds=(lock.fileno(),))
        if skipped:
            log.info("Prometheus not started: %s", skipped)
        print(
            f"eventpipe ready: mqtt={redact(settings.mqtt_url)} api={api.url} "
            f"metrics=http://{settings.metrics_host}:{settings.metrics_port}/metrics "
            + ("" if skipped else f"prometheus={prometheus.url} ")
            + f"data={settings.data_dir.resolve()}",
            flush=True,
        )
        shown = "<a key of EVENTPIPE_API_KEYS or EVENTPIPE_API_KEYS_FILE>"
        if generated:
            # The user's own keys are never echoed; a generated one is theirs to copy, and the same at every start.
            shown, made = generated
            kept = settings.data_dir.resolve() / FILE_NAME
            origin = f"generated, kept in {kept}" if made else f"kept in {kept} since an earlier start"
            print(f"API key ({origin}; set EVENTPIPE_API_KEYS to choose your own): {shown}", flush=True)
        trust = ""
        if tls:
            print(f"TLS: clients trust the local CA {tls.ca.resolve()}", flush=True)
            trust = f"--cacert '{tls.ca.resolve()}' "
        print(f"try: curl {trust}-H 'Authorization: Bearer {shown}' '{api.url}/events?limit=5'", flush=True)
        progress = Progress(registry)

        def check() -> str | None:
            progress.report()
            return _health(worker, broker, api)

        problem = shutdown.wait(check)
        if problem:
            log.error("stopping: %s", problem)
    finally:
        api.stop()
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
