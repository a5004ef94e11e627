"""Container health check: exit 0 when the service answers GET /healthz with 200, else 1.

Used by the images' HEALTHCHECK and docker-compose.yml (no curl in the slim images). It asks the port the
service listens on (REID_PORT, default 8000) on the loopback interface. /healthz never needs a key;
`python healthcheck.py /readyz` asks readiness instead and sends the first key of REID_API_KEY, if any.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = 8000
TIMEOUT_SECONDS = 4.0


def probe(path: str = "/healthz", port: int | None = None, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Ask ``path`` on the loopback interface; (healthy, a one-line reason)."""
    if port is None:
        port = int(os.environ.get("REID_PORT") or DEFAULT_PORT)
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url)
    keys = [key.strip() for key in os.environ.get("REID_API_KEY", "").split(",") if key.strip()]
    if keys and path != "/healthz":
        request.add_header("X-API-Key", keys[0])
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # fixed loopback URL
            return response.status == 200, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"{url}: HTTP {error.code}"
    except (OSError, ValueError) as error:
        return False, f"{url}: {error}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    healthy, reason = probe(args[0] if args else "/healthz")
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
