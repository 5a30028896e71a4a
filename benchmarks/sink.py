"""A tiny local Sentry ingest sink on 127.0.0.1.

It accepts envelopes (``POST /api/<project>/envelope/``), counts the payload
bytes as they arrived on the wire (compressed, as sentry-sdk sends them) per
project id, and keeps the decoded ``profile`` and ``profile_chunk`` items so
a benchmark can check what a profiler sent. ``GET /dump/<project>`` returns
them as JSON and forgets them. Each benchmark run uses its own project id.

It runs in a thread of the orchestrator (run.py), never in the measured
process, so its own CPU is not charged to the profiler under test.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SOAK_PROJECTS = 900000  # project ids from here on are only counted, never kept


def _decompress(body: bytes, encoding: str) -> bytes | None:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            return None
        return bytes(brotli.decompress(body))
    return None


def parse_envelope(data: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """The items of an envelope as (item header, payload bytes)."""
    items: list[tuple[dict[str, Any], bytes]] = []
    newline = data.find(b"\n")
    if newline < 0:
        return items
    pos = newline + 1
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data)
        header_line = data[pos:end].strip()
        pos = end + 1
        if not header_line:
            continue
        header = json.loads(header_line)
        length = header.get("length")
        if length is not None:
            payload = data[pos : pos + int(length)]
            pos += int(length) + 1
        else:
            end = data.find(b"\n", pos)
            if end < 0:
                end = len(data)
            payload = data[pos:end]
            pos = end + 1
        items.append((header, payload))
    return items


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes: dict[str, int] = {}
        self.envelopes: dict[str, int] = {}
        self.profiles: dict[str, list[dict[str, Any]]] = {}
        self.items: dict[str, dict[str, int]] = {}
        self.undecoded: dict[str, int] = {}
        self.samples: dict[str, int] = {}
        self.by_thread: dict[str, dict[str, int]] = {}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else keep-alive replies wait 40 ms

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = self.path.strip("/").split("/")
                project = parts[1] if len(parts) > 1 else "unknown"
                sink.record(project, body, self.headers.get("Content-Encoding") or "")
                self._reply(200, b"{}")

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] in ("dump", "count"):
                    dump = sink.dump(parts[1], keep_profiles=parts[0] == "dump")
                    self._reply(200, json.dumps(dump).encode())
                else:
                    self._reply(404, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Sink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def dsn(self, project: str) -> str:
        return f"http://benchkey@127.0.0.1:{self.port}/{project}"

    def record(self, project: str, body: bytes, encoding: str) -> None:
        decoded = None
        try:
            data = _decompress(body, encoding)
            if data is not None:
                decoded = parse_envelope(data)
        except Exception:  # noqa: BLE001 - a sink must never fail a request
            decoded = None
        with self.lock:
            self.bytes[project] = self.bytes.get(project, 0) + len(body)
            self.envelopes[project] = self.envelopes.get(project, 0) + 1
            if decoded is None:
                self.undecoded[project] = self.undecoded.get(project, 0) + 1
                return
            counts = self.items.setdefault(project, {})
            for header, payload in decoded:
                kind = str(header.get("type"))
                counts[kind] = counts.get(kind, 0) + 1
                if kind in ("profile", "profile_chunk"):
                    try:
                        profile = json.loads(payload)
                    except ValueError:
                        self.undecoded[project] = self.undecoded.get(project, 0) + 1
                        continue
                    taken = profile.get("profile", profile).get("samples", [])
                    self.samples[project] = self.samples.get(project, 0) + len(taken)
                    threads = self.by_thread.setdefault(project, {})
                    for sample in taken:
                        thread = str(sample.get("thread_id"))
                        threads[thread] = threads.get(thread, 0) + 1
                    if not project.isdigit() or int(project) < SOAK_PROJECTS:
                        self.profiles.setdefault(project, []).append(
                            {"type": kind, "payload": profile}
                        )

    def dump(self, project: str, keep_profiles: bool = True) -> dict[str, Any]:
        """What a project sent, then forget it (without keep_profiles, only
        how many samples its profiles held)."""
        with self.lock:
            profiles = self.profiles.pop(project, [])
            result: dict[str, Any] = {
                "bytes": self.bytes.pop(project, 0),
                "envelopes": self.envelopes.pop(project, 0),
                "items": self.items.pop(project, {}),
                "undecoded": self.undecoded.pop(project, 0),
                "profile_samples": self.samples.pop(project, 0),
                "profile_samples_by_thread": self.by_thread.pop(project, {}),
            }
            if keep_profiles:
                result["profiles"] = profiles
            return result


if __name__ == "__main__":
    import time

    running = Sink().start()
    print(f"sink listening: DSN {running.dsn('1')}", flush=True)
    while True:
        time.sleep(3600)
