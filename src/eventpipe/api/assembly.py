"""The API as `eventpipe api` and `eventpipe up` both serve it, wired here alone: its reader, its admin
means and backups (as EVENTPIPE_ADMIN_CLICKHOUSE_DSN's user), the app, and the server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.api.keyring import Keyring
from eventpipe.api.maintenance import Admin
from eventpipe.api.server import ApiServer
from eventpipe.api.source import open_reader
from eventpipe.config import Settings
from eventpipe.ingest.limit import limits_from
from eventpipe.ingest.replay import Replayer
from eventpipe.store.audit import Audit
from eventpipe.store.client import connect, reaching
from eventpipe.store.dsn import embedded
from eventpipe.store.erasure import Eraser
from eventpipe.store.outcome import Outcomes
from eventpipe.store.writer import Writer

# An erasure waits for deletes that rewrite each part's row mask: seconds per 10M events stored.
ERASE_TIMEOUT_S = 900


def assemble(settings: Settings, registry: CollectorRegistry, keyring: Keyring) -> ApiServer:
    """The API server, not started; `registry` gets the API's metrics. A store that cannot be reached
    raises a StorageError naming the setting of the DSN at fault."""
    dsn, admin_dsn = settings.resolved_clickhouse_dsn, settings.resolved_admin_clickhouse_dsn
    with reaching(dsn, settings.clickhouse_dsn_setting):
        reader = open_reader(
            dsn, settings.api_query_timeout_s, settings.clickhouse_dsn_setting, settings.api_query_memory_bytes
        )
    # Backups, replays and erasures need rights a read-only user lacks: all of them as the admin user.
    with reaching(admin_dsn, settings.admin_clickhouse_dsn_setting):
        means = admin(settings)
        backups = means.backups(connect(admin_dsn))
    app = create_app(
        reader,
        registry,
        keyring,
        settings.cursor_secret.get_secret_value() if settings.cursor_secret else "",
        backups=backups,
        admin=means,
        max_exports=settings.api_max_exports,
        max_requests=settings.api_max_requests,
        max_requests_per_key=settings.api_max_requests_per_key,
    )
    return ApiServer(
        app,
        settings.api_host,
        settings.api_port,
        settings.api_tls_cert_file,
        settings.api_tls_key_file,
        registry=registry,
    )


def admin(settings: Settings) -> Admin:
    """The admin routes' means, writing as EVENTPIPE_ADMIN_CLICKHOUSE_DSN's user, parsing under the
    limits the settings give (as the worker does with the same settings)."""
    client = connect(settings.resolved_admin_clickhouse_dsn, timeout_s=ERASE_TIMEOUT_S)
    secret = settings.erasure_secret.get_secret_value() if settings.erasure_secret else None
    eraser = Eraser(client, embedded=embedded(settings.resolved_admin_clickhouse_dsn))
    return Admin(Replayer(Outcomes(client), Writer(client), limits_from(settings)), eraser, Audit(client), secret)
