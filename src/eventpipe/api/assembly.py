"""The API as `eventpipe api` and `eventpipe up` both serve it, wired here alone: its reader, its admin
means and backups (as EVENTPIPE_ADMIN_CLICKHOUSE_DSN's user), the app, and the server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from eventpipe.api.app import create_app
from eventpipe.api.keyring import Keyring
from eventpipe.api.maintenance import admin
from eventpipe.api.server import ApiServer
from eventpipe.api.source import open_reader
from eventpipe.config import Settings
from eventpipe.store.client import connect, reaching


def assemble(settings: Settings, registry: CollectorRegistry, keyring: Keyring) -> ApiServer:
    """The API server, not started; `registry` gets the API's metrics. A store that cannot be reached
    raises a StorageError naming the setting of the DSN at fault."""
    dsn, admin_dsn = settings.resolved_clickhouse_dsn, settings.resolved_admin_clickhouse_dsn
    with reaching(dsn, settings.clickhouse_dsn_setting):
        reader = open_reader(dsn, settings.api_query_timeout_s)
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
