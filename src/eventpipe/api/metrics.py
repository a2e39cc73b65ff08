"""RED metrics of the API per route template, requests per key name, and the keys file's state.

Labels stay bounded whatever clients send: route templates, and the names of
the keys the operator configured (never a key itself, nor what a client sent
as one: a request without a valid key is counted under its route only).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventpipe.api.keyring import Keyring

# Codes every route starts with at 0 (others appear when they first happen).
PRIMED_CODES = ("200", "400", "401", "403", "404", "422", "429", "500", "503")
# Per key, what an operator watches for: served, refused for its scope, over its rate.
PRIMED_KEY_CODES = ("200", "403", "429")
# HTTP parsers accept any token as a method; labels take only these.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def instrument(app: FastAPI, registry: CollectorRegistry, keyring: Keyring | None = None) -> None:
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
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in sorted((route.methods or set()) & METHODS):
                for code in PRIMED_CODES:
                    requests.labels(route.path, method, code)
                duration.labels(route.path, method)
    for code in ("404", "405"):
        requests.labels("unmatched", "GET", code)
    by_key = Counter(
        "eventpipe_api_key_requests_total",
        "HTTP requests made with a valid key, by the key's name and status code.",
        ["key", "code"],
        registry=registry,
    )
    primed = -1

    def prime_keys() -> None:
        nonlocal primed
        if primed != keyring.generation:  # a reloaded keys file may name new keys
            primed = keyring.generation
            for grant in keyring.grants():
                for code in PRIMED_KEY_CODES:
                    by_key.labels(grant.name, code)

    prime_keys()
    registry.register(KeysCollector(keyring))

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        # Made here, so that HEAD's copy of the scope (api.app.HeadAsGet) shares it: auth records the key in it.
        request.scope.setdefault("state", {})
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
            # Recorded by api.auth on the request's state, which HEAD's copy of the scope shares.
            grant = getattr(request.state, "grant", None)
            if grant is not None:
                prime_keys()
                by_key.labels(grant.name, str(code)).inc()


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
