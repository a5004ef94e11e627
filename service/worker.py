"""``python -m service.worker [--name NAME] [--burst | --ping]``: runs footage jobs from the Redis queue
(REID_JOB_QUEUE=redis; see `service.footage.queue`). ``--ping`` (the compose health check) exits 0 when a
worker of this host is registered and alive in Redis, 1 otherwise, without loading anything.

It reads the same REID_* settings as the API and loads what a job needs the same way (the model, the shared
Milvus gallery, the media store), then takes one job at a time: start as many worker processes as the
machine has cores to spare (`docker compose --profile scale up --scale worker=N`). API replicas never run
jobs under REID_JOB_QUEUE=redis; at least one worker must run, or jobs stay queued.

SIGTERM (or Ctrl-C) stops the running job at its next frame (it ends failed, what it enrolled kept and
listed) and exits 0. A worker killed outright (SIGKILL) is noticed by the others and the API replicas within
about four REID_JOB_HEARTBEAT_S, and its job is failed with the reason.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket

from service.app import configure_logging, load_or_exit, settings_or_exit
from service.footage.queue import work

log = logging.getLogger("service.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.worker",
                                     description="Run footage jobs from the Redis queue (REID_JOB_QUEUE=redis).")
    parser.add_argument("--name", default=None, help="worker name shown by RQ (default: HOSTNAME.PID.RANDOM)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    mode.add_argument("--ping", action="store_true", help="exit 0 when a worker of this host is alive in Redis")
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    configure_logging(settings.log_level)
    if settings.job_queue != "redis":
        parser.exit(2, "reid worker cannot start: set REID_JOB_QUEUE=redis (with local, the API runs footage jobs "
                       "itself)\n")
    if args.ping:
        return 0 if ping(settings.redis_url) else 1
    state = load_or_exit(settings)
    try:
        name = args.name or default_name()
        work(state.footage, settings.job_heartbeat_s, name=name, burst=args.burst)
    finally:
        state.close()
    log.info("worker stopped")
    return 0


def default_name() -> str:
    """HOSTNAME.PID.RANDOM. The random part: a container that compose restarts after its worker was killed has
    the same host name and PID (1), and RQ refuses to register a worker over the killed one's registration,
    which looks alive until it expires (minutes); the restarted worker would exit until then."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"


def ping(redis_url: str) -> bool:
    """Whether a worker named after this host (HOSTNAME.PID.RANDOM, the default) is registered in Redis: RQ drops
    a worker's registration once its heartbeats stop."""
    from rq import Worker

    from service.footage.queue import redis_client

    prefix = f"{socket.gethostname()}."
    try:
        return any(worker.name.startswith(prefix) for worker in Worker.all(connection=redis_client(redis_url, False)))
    except Exception as error:  # Redis away: not healthy
        log.warning("worker ping: %s", error)
        return False


if __name__ == "__main__":
    raise SystemExit(main())
