"""`eventpipe healthcheck worker|api|broker-metrics`: the images' HEALTHCHECK, which `docker compose up --wait`
relies on.

worker: healthy while connected to the broker, read from its own metrics
endpoint (eventpipe_mqtt_connected), so a worker whose flusher died (it then
exits) or whose broker is gone shows as unhealthy.
api: healthy while /readyz answers 200: the API runs and ClickHouse answers it.
broker-metrics: healthy while its /metrics answers 200, which it does only while
subscribed to the broker's statistics.
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import urllib.error
import urllib.request

from eventpipe.config import Settings
from eventpipe.port import address

CONNECTED = "eventpipe_mqtt_connected"
TIMEOUT_S = 3
# Read no more than this of the worker's metrics (a few hundred KiB at most): a check holds what it reads.
METRICS_BYTES = 16 * 2**20
# Said when nothing answers: a check run by hand (or in an image given other ports) asks the default
# address unless given the service's own variables, and a bare "connection refused" did not say so.
METRICS_ADDRESS = "EVENTPIPE_METRICS_HOST and EVENTPIPE_METRICS_PORT name it: give them the service's values"
API_ADDRESS = (
    "EVENTPIPE_API_HOST and EVENTPIPE_API_PORT name it, and EVENTPIPE_API_TLS_CERT_FILE makes it HTTPS: "
    "give them the API's values"
)


def run_healthcheck(args: argparse.Namespace) -> int:
    settings = Settings()
    check = {"worker": worker_health, "api": api_health, "broker-metrics": broker_metrics_health}[args.service]
    healthy, why = check(settings)
    print(f"{'healthy' if healthy else 'unhealthy'}: {why}")
    return 0 if healthy else 1


def _local(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://{address(host, port)}"


def worker_health(settings: Settings) -> tuple[bool, str]:
    url = _local(settings.metrics_host, settings.metrics_port) + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http to this host
            raw = response.read(METRICS_BYTES + 1)
        if len(raw) > METRICS_BYTES:
            return False, f"{url} answered over {METRICS_BYTES // 2**20} MiB of metrics"
        body = raw.decode(errors="replace")
    except OSError as exc:
        return False, f"{url} does not answer: {exc}{_where(exc, METRICS_ADDRESS)}"
    except (http.client.InvalidURL, ValueError) as exc:  # urllib's own ValueError for 'a:b', '[x'
        return False, _unusable(url, exc, "EVENTPIPE_METRICS_HOST", settings.metrics_host)
    for line in body.splitlines():
        if line.startswith(CONNECTED + " "):
            connected = float(line.split()[1]) == 1.0
            return connected, "connected to the broker" if connected else "not connected to the broker"
    return False, f"{CONNECTED} missing from {url}"


def broker_metrics_health(settings: Settings) -> tuple[bool, str]:
    url = _local(settings.metrics_host, settings.metrics_port) + "/metrics"
    return _answers_200(url, None, "EVENTPIPE_METRICS_HOST", settings.metrics_host, METRICS_ADDRESS)


def api_health(settings: Settings) -> tuple[bool, str]:
    context = None
    if settings.api_tls_cert_file is not None:
        # HTTPS, as the API serves it. The certificate is not verified: this is
        # the container talking to itself on loopback, and an operator's own
        # certificate need not name 127.0.0.1. Prometheus does verify it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = _local(settings.api_host, settings.api_port, "https" if context else "http") + "/readyz"
    return _answers_200(url, context, "EVENTPIPE_API_HOST", settings.api_host, API_ADDRESS)


def _answers_200(url: str, context: ssl.SSLContext | None, variable: str, host: str, where: str) -> tuple[bool, str]:
    """Healthy while `url` answers 200; `variable` sets `host`, named when no URL can hold it, and `where`
    says which settings make the URL, when nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:  # noqa: S310 - this host
            return True, f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}: {exc.read(200).decode(errors='replace')}"
    except OSError as exc:
        return False, f"{url} does not answer: {exc}{_where(exc, where)}"
    except (http.client.InvalidURL, ValueError) as exc:
        return False, _unusable(url, exc, variable, host)


def _where(exc: OSError, where: str) -> str:
    """`where`, unless the check timed out: then something took the connection at that address, the service's
    own, busy or stuck, and its variables were right."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return "" if isinstance(reason, TimeoutError) else f" ({where})"


def _unusable(url: str, exc: Exception, variable: str, host: str) -> str:
    # A host no URL can hold ('bad host') was a traceback. Unhealthy, exit 1, like any other failed
    # check: Docker reserves a HEALTHCHECK's exit 2.
    return f"cannot ask {url}: {variable} {host!r} is no host name or address ({exc})"
