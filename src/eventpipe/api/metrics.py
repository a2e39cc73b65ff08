"""RED metrics of the API per route template, requests per key name, and the keys file's state.

Labels stay bounded whatever clients send: route templates, and the names of
the keys the operator configured (never a key itself, nor what a client sent
as one: a request without a valid key is counted under its route only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventpipe.api.error import CLIENT_GONE
from eventpipe.api.flight import ANSWERED
from eventpipe.api.grant import Grant
from eventpipe.api.keyring import Keyring
from eventpipe.api.protocol import CLOSED_REASONS
from eventpipe.api.stream import CUT_OFF

# Codes every route starts with at 0 (others appear when they first happen).
PRIMED_CODES = ("200", "400", "401", "403", "404", "422", "429", "500", "503")
# Per key, what an operator watches for: served, refused for its scope, over its rate.
PRIMED_KEY_CODES = ("200", "403", "429")
# HTTP parsers accept any token as a method; labels take only these.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def instrument(
    app: FastAPI, registry: CollectorRegistry, keyring: Keyring | None = None, routers: Sequence[APIRouter] = ()
) -> None:
    """Count and time every request; `routers` are those `app` includes (their routes' series are made at 0)."""
    keyring = keyring or Keyring()
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
    for template, method in _templates(app, routers):
        for code in PRIMED_CODES:
            requests.labels(template, method, code)
        duration.labels(template, method)
    for code in ("404", "405"):
        requests.labels("unmatched", "GET", code)
    registry.register(KeysCollector(keyring))

    app.add_middleware(Measure, requests=requests, duration=duration, by_key=KeyRequests(registry, keyring))


def closed_connections(registry: CollectorRegistry) -> Counter:
    """Connections the API's server closed by one of its bounds (api.protocol), every reason at 0 from the start.

    Refusals at the cap, and requests cut off before their head was in, never
    reach the app: eventpipe_http_requests_total does not see them."""
    closed = Counter(
        "eventpipe_http_connections_closed_total",
        "Connections the API's server closed by one of its bounds, by reason: limit (over its cap of open"
        " connections, closed as accepted), timeout (a request not all sent in time: 408), malformed (bytes that are"
        " not HTTP/1.x: 400), stalled (its answers left unread for a minute). Keep-alive's idle closes are not"
        " counted.",
        ["reason"],
        registry=registry,
    )
    for reason in CLOSED_REASONS:
        closed.labels(reason)
    return closed


class Measure:
    """Counts and times every request, to the last byte of its answer handed to the server (api.flight):
    how long a client takes to read it is its network's, and a slow reader is bounded by the stall bound.

    Plain ASGI, not @app.middleware("http"): Starlette's BaseHTTPMiddleware
    runs each request in a task group behind a memory stream, which cost
    about a third of the API's own CPU per request in a profile of
    /stats/event-types (about 1 ms here)."""

    def __init__(self, app: ASGIApp, requests: Counter, duration: Histogram, by_key: KeyRequests) -> None:
        self.app = app
        self._requests = requests
        self._duration = duration
        self._by_key = by_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # if the handler raises before answering, the client gets a 500
        # Made here, so that HEAD's copy of the scope (api.app.HeadAsGet) shares it: auth records the key in it.
        state = scope.setdefault("state", {})

        async def noting_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        async def receiving() -> Message:
            nonlocal started
            message = await receive()
            if message["type"] == "http.request":
                # Timed from the last of its body the API takes, not its head: a key that sent a body late
                # (a GET's `{}`, or 17 bytes of a longer one, which are refused unread, just before the
                # read timeout) was timed for its own wait, and spent the latency SLO at will.
                started = time.perf_counter()
            return message

        try:
            await self.app(scope, receiving, noting_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label, so scanners cannot blow up cardinality.
            # The template as OpenAPI names it ("/events/{event_id}"), whatever its parameters' convertors.
            template = getattr(route, "path_format", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            cut_off, cut_at = scope.get(CUT_OFF), None
            if cut_off is not None:
                # Its 200 went out before the failure, but its client got a failed transfer: counted as it
                # failed; a ClickHouse failure as a 200 was hidden from the availability SLI and its alerts.
                cut_at, code = cut_off
            self._requests.labels(template, method, str(code)).inc()
            if code != CLIENT_GONE:
                # Nobody waited for that answer; timed, a key could hold a body for up to the API's read
                # timeout, hang up, and spend the latency SLO at will.
                # A cut-off answer ended at the cut: what follows is its producer's cleanup.
                ended = scope.get(ANSWERED) or cut_at or time.perf_counter()
                self._duration.labels(template, method).observe(ended - started)
            grant = state.get("grant")
            if isinstance(grant, Grant):
                self._by_key.count(grant.name, code)


def _templates(app: FastAPI, routers: Sequence[APIRouter]) -> list[tuple[str, str]]:
    """Every route's template and method: the app's own routes and those of `routers`, which it
    includes without a prefix. FastAPI 0.165 keeps an included router whole in app.routes, so
    walking app.routes alone primed /healthz and /metrics and none of the data routes."""
    routes = [*app.routes, *(route for router in routers for route in router.routes)]
    return sorted(
        {
            (route.path_format, method)
            for route in routes
            if isinstance(route, APIRoute)
            for method in (route.methods or set()) & METHODS
        }
    )


class KeyRequests(Collector):
    """Requests per key name and code, every key's series made at 0 as soon as the key is admitted, and
    gone once it is not: keys rotated under new names made series that stayed until a restart, without
    end for an operator who names each key by its date. Registered after KeysCollector, whose scrape
    reads a changed keys file first, so a key removed is gone from the same scrape."""

    def __init__(self, registry: CollectorRegistry, keyring: Keyring) -> None:
        self._keyring = keyring
        self._counter = Counter(
            "eventpipe_api_key_requests_total",
            "HTTP requests made with a valid key, by the key's name and status code.",
            ["key", "code"],
            registry=None,
        )
        self._primed = -1
        self._series: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        self._prime()
        yield from self._counter.collect()

    def count(self, name: str, code: int) -> None:
        self._prime()
        with self._lock:
            # A request admitted just before its key was removed counts too, until the next change of keys.
            self._series.add((name, str(code)))
            self._counter.labels(name, str(code)).inc()

    def _prime(self) -> None:
        if self._primed == self._keyring.generation:  # a reloaded keys file may name new keys, or fewer
            return
        with self._lock:
            self._primed = self._keyring.generation
            names = {grant.name for grant in self._keyring.grants()}
            for name, code in [series for series in self._series if series[0] not in names]:
                self._series.discard((name, code))
                self._counter.remove(name, code)
            for name in names:
                for code in PRIMED_KEY_CODES:
                    self._series.add((name, code))
                    self._counter.labels(name, code)


class KeysCollector(Collector):
    """The keys admitted and the keys file's state, read at each scrape (which also looks for a changed file)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def collect(self) -> Iterator[Metric]:
        self._keyring.refresh()
        keys = GaugeMetricFamily("eventpipe_api_keys", "Keys the API admits, by where they are set.", labels=["source"])
        counted = {"env": 0, "generated": 0, "file": 0}
        for grant in self._keyring.grants():
            source = grant.name.split("#", 1)[0] if "#" in grant.name else "file"
            counted["generated" if source == "up" else source] += 1
        for source, count in counted.items():
            keys.add_metric([source], count)
        yield keys
        yield GaugeMetricFamily(
            "eventpipe_api_keys_file_invalid",
            "1 while EVENTPIPE_API_KEYS_FILE cannot be loaded: the keys of its last good version are admitted.",
            value=1 if self._keyring.problem else 0,
        )
        loads = CounterMetricFamily(
            "eventpipe_api_keys_file_loads", "Reads of a changed EVENTPIPE_API_KEYS_FILE, by result.", labels=["result"]
        )
        for result, count in self._keyring.loads.items():
            loads.add_metric([result], count)
        yield loads
