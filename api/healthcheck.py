"""Docker healthcheck of the API: healthy while /readyz answers 200 (the API runs and ClickHouse answers)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('EVENTPIPE_API_PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            print(f"healthy: {url} answered {response.status}")
            return 0
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url} answered {exc.code}: {exc.read().decode(errors='replace')[:200]}")
    except OSError as exc:
        print(f"unhealthy: {url} does not answer: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
