"""Docker healthcheck of the API: healthy while /readyz answers 200 (the API runs and ClickHouse answers)."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("EVENTPIPE_API_PORT", "8000")
    context = None
    if os.environ.get("EVENTPIPE_API_TLS_CERT_FILE"):
        # HTTPS, as the API serves it. The certificate is not verified: this is
        # the container talking to itself on loopback, and an operator's own
        # certificate need not name 127.0.0.1. Prometheus does verify it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = f"{'https' if context else 'http'}://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310 - loopback http(s)
            print(f"healthy: {url} answered {response.status}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} answered {exc.code}: {exc.read().decode(errors='replace')[:200]}")
    except OSError as exc:
        print(f"unhealthy: {url} does not answer: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
