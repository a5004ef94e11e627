"""``python -m service [--host H] [--port P]``: load the model and gallery, then serve with uvicorn.

SIGTERM (or Ctrl-C) shuts down gracefully: the port stops accepting, requests in progress get up to
REID_SHUTDOWN_TIMEOUT_S to finish, the embedder finishes its queue, the gallery is flushed (index
snapshot, WAL checkpoint) and the process exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal

import uvicorn

from service.app import configure_logging, create_app, load_or_exit, settings_or_exit
from service.http_protocol import GuardedH11Protocol

log = logging.getLogger("service")


def _note_signal_after_shutdown(signal_number: int, frame: object) -> None:
    # uvicorn handles SIGTERM/SIGINT itself while serving, then raises the signal again once it has shut
    # down, to give the previous handler its turn. Python's defaults would then kill the process with
    # -SIGTERM or raise KeyboardInterrupt; the shutdown was clean, so this handler lets main() return 0.
    log.info("stopped on %s after a graceful shutdown", signal.Signals(signal_number).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the MG-RAFA reID gallery API.")
    parser.add_argument("--host", default=None, help="bind address (default: REID_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: REID_PORT, else 8000)")
    args = parser.parse_args(argv)

    settings = settings_or_exit()
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    configure_logging(settings.log_level)
    # Loaded before binding the port, so a bad model or gallery ends the process at once with one line.
    state = load_or_exit(settings)
    app = create_app(settings, state)
    # The service logs one line per request itself (with its request id), so uvicorn's access log is off.
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        # Header deadline and connection cap, which uvicorn's own protocol lacks (service/http_protocol.py).
        http=GuardedH11Protocol.configured(settings.header_timeout_s, settings.max_connections),
    )
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, _note_signal_after_shutdown)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
