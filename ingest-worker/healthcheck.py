"""Docker healthcheck of the ingest worker: healthy while it is connected to the broker.

Reads the worker's own metrics endpoint, so a worker whose flusher died (it then
exits) or whose broker is gone (eventpipe_mqtt_connected 0) shows as unhealthy.
"""

from __future__ import annotations

import os
import sys
import urllib.request

METRIC = "eventpipe_mqtt_connected"


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('EVENTPIPE_METRICS_PORT', '9464')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read().decode()
    except OSError as exc:
        print(f"unhealthy: {url} does not answer: {exc}")
        return 1
    for line in body.splitlines():
        if line.startswith(METRIC + " "):
            connected = float(line.split()[1]) == 1.0
            print("healthy: connected to the broker" if connected else "unhealthy: not connected to the broker")
            return 0 if connected else 1
    print(f"unhealthy: {METRIC} missing from {url}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
