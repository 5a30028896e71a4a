"""The web workload: a Flask app with sentry-sdk's integration, served on
127.0.0.1 by a threaded keep-alive server, driven by _loadgen.py (in its own
process) for a fixed number of requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from workloads import WorkloadResult, _spin

HERE = os.path.dirname(os.path.abspath(__file__))
CONNECTIONS = 4


def web_compute(units: float) -> int:
    return _spin(units)


def web_io(seconds: float) -> None:
    time.sleep(seconds)  # stands in for a database or upstream call


def make_app() -> Any:
    from flask import Flask, jsonify

    app = Flask("sigprof_bench")

    @app.route("/work")
    def work() -> Any:
        value = web_compute(1.0)
        web_io(0.001)
        return jsonify(ok=True, value=value)

    return app


class WebRun:
    """Set up before the measured region (server and load generator ready),
    run inside it."""

    def __init__(self, scale: float) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class KeepAlive(WSGIRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        self.requests = max(50, int(scale * 400))
        self.server = make_server(
            "127.0.0.1", 0, make_app(), threaded=True, request_handler=KeepAlive
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="web-server", daemon=True
        )
        self.thread.start()
        port = self.server.server_port
        self.loadgen = subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "_loadgen.py"),
                str(port),
                "/work",
                str(self.requests),
                str(CONNECTIONS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.loadgen.stdout is not None and self.loadgen.stdin is not None
        ready = self.loadgen.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"load generator did not start: {ready!r}")
        self.stats: dict[str, Any] | None = None

    def __call__(self, scale: float) -> WorkloadResult:
        assert self.loadgen.stdin is not None and self.loadgen.stdout is not None
        self.loadgen.stdin.write("go\n")
        self.loadgen.stdin.flush()
        self.stats = json.loads(self.loadgen.stdout.readline())
        self.loadgen.wait()
        result = WorkloadResult()
        stats = self.stats
        assert stats is not None
        result.extra = {
            "requests": float(stats["requests"]),
            "errors": float(stats["errors"]),
            "rps": stats["requests"] / stats["wall"] if stats["wall"] > 0 else 0.0,
            "p50_ms": float(stats["p50_ms"]),
            "p99_ms": float(stats["p99_ms"]),
        }
        return result

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
