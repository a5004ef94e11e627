"""``python -m service [--host H] [--port P]``: load the model and gallery, then serve with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from service.app import configure_logging, create_app, load_or_exit, settings_or_exit


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
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, log_level=settings.log_level.lower())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
