"""RED metrics of the API per route template: bounded labels, whatever the URLs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Histogram

# Codes every route starts with at 0 (others appear when they first happen).
PRIMED_CODES = ("200", "400", "401", "404", "422", "500", "503")
# HTTP parsers accept any token as a method; labels take only these.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    requests = Counter(
        "eventpipe_http_requests_total",
        "HTTP requests answered, by route template, method and status code.",
        ["route", "method", "code"],
        registry=registry,
    )
    duration = Histogram(
        "eventpipe_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template and method.",
        ["route", "method"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=registry,
    )

    # Series exist from the start at 0: rate() cannot see the first increment
    # of a series born at 1, so a process's first errors would go unnoticed.
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in sorted((route.methods or set()) & METHODS):
                for code in PRIMED_CODES:
                    requests.labels(route.path, method, code)
                duration.labels(route.path, method)
    for code in ("404", "405"):
        requests.labels("unmatched", "GET", code)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        code = 500  # if the handler raises, the client gets a 500
        try:
            response = await call_next(request)
            code = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            # Unmatched paths share one label, so scanners cannot blow up cardinality.
            template = getattr(route, "path", "unmatched")
            method = request.method if request.method in METHODS else "other"
            requests.labels(template, method, str(code)).inc()
            duration.labels(template, method).observe(time.perf_counter() - started)
