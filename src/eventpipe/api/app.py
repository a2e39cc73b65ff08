"""The FastAPI application factory. Health and metrics are open; data endpoints need a key."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from eventpipe import __version__
from eventpipe.api import error
from eventpipe.api.auth import KeyCheck
from eventpipe.api.metrics import instrument
from eventpipe.api.route import router
from eventpipe.store.reader import Reader

DESCRIPTION = """\
Events ingested over MQTT and stored in ClickHouse, served over HTTP.

Data endpoints need `Authorization: Bearer <key>`, a key from `EVENTPIPE_API_KEYS`.
Lists are newest first and paginated with an opaque `next_cursor`; lists and counts
show each event once, also while ClickHouse still holds redelivered copies.
Every error answers `{"error": code, "detail": message}`.
"""


def create_app(reader: Reader, registry: CollectorRegistry, api_keys: Sequence[str]) -> FastAPI:
    app = FastAPI(title="eventpipe", version=__version__, description=DESCRIPTION)
    error.install(app)

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="ClickHouse answers queries", responses=error.responses(503))
    def readyz() -> dict[str, str]:
        if not reader.ping():
            raise error.ApiError(503, "unavailable", "ClickHouse does not answer")
        return {"status": "ready"}

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router(reader, KeyCheck(api_keys)))
    instrument(app, registry)  # last: it primes a series for every route defined above
    return app
