"""uWSGI's stats server, read by the tests that serve requests with it."""

from __future__ import annotations

import json
import socket
import time


def wait_until_uwsgi_workers_idle(stats_port: int, requests: int) -> None:
    """Until uWSGI's stats server shows every request closed and no worker
    busy. A client has its answer before the worker is done with the request
    (the WSGI iterable's close(), which finishes the Sentry transaction, comes
    after the body is sent), and uWSGI skips Python's atexit in a worker that
    is killed while busy (uwsgi_python_atexit)."""
    deadline = time.monotonic() + 30
    while True:
        with socket.create_connection(("127.0.0.1", stats_port), timeout=5) as stats:
            raw = b"".join(iter(lambda: stats.recv(65536), b""))
        workers = json.loads(raw)["workers"]
        if sum(w["requests"] for w in workers) >= requests and all(
            w["status"] == "idle" for w in workers
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"uWSGI workers still busy: {workers}")
        time.sleep(0.05)
