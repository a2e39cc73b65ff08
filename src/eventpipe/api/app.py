"""The FastAPI application factory. Health and metrics are open; data endpoints need a key."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from eventpipe import __version__
from eventpipe.api.metrics import instrument
from eventpipe.store.reader import Reader


def create_app(reader: Reader, registry: CollectorRegistry) -> FastAPI:
    app = FastAPI(
        title="eventpipe",
        version=__version__,
        description="Events ingested over MQTT and stored in ClickHouse, served over HTTP.",
    )

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="ClickHouse answers queries")
    def readyz() -> JSONResponse:
        if reader.ping():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "detail": "ClickHouse does not answer"}, status_code=503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    instrument(app, registry)  # last: it primes a series for every route defined above
    return app
