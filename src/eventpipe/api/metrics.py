"""RED metrics of the API per route template: bounded labels, whatever the URLs."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

    app.add_middleware(Measure, requests=requests, duration=duration)


class Measure:
    """Counts and times every request, to the last byte of its answer.

    Plain ASGI, not @app.middleware("http"): Starlette's BaseHTTPMiddleware
    runs each request in a task group behind a memory stream, which cost
    about a third of the API's own CPU per request in a profile of
    /stats/event-types (about 1 ms here)."""

    def __init__(self, app: ASGIApp, requests: Counter, duration: Histogram) -> None:
        self.app = app
        self._requests = requests
        self._duration = duration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # if the handler raises before answering, the client gets a 500

        async def noting_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label, so scanners cannot blow up cardinality.
            template = getattr(route, "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self._requests.labels(template, method, str(code)).inc()
            self._duration.labels(template, method).observe(time.perf_counter() - started)
