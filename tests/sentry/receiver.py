"""A Sentry ingestion stand-in on 127.0.0.1: receives envelopes over HTTP
from sentry-sdk's real transport, un-gzips and parses them."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

Item = tuple[dict[str, Any], Any]  # (item header, parsed payload)


class Envelope:
    def __init__(self, headers: dict[str, Any], items: list[Item]) -> None:
        self.headers = headers
        self.items = items

    def types(self) -> list[str]:
        return [header["type"] for header, _ in self.items]

    def payload(self, kind: str) -> Any:
        found = [payload for header, payload in self.items if header["type"] == kind]
        assert len(found) == 1, f"expected one {kind} item, found {self.types()}"
        return found[0]


def parse_envelope(body: bytes) -> Envelope:
    newline = body.index(b"\n")
    headers = json.loads(body[:newline])
    pos = newline + 1
    items: list[Item] = []
    while pos < len(body):
        end = body.find(b"\n", pos)
        if end == -1:
            end = len(body)
        line = body[pos:end]
        pos = end + 1
        if not line.strip():
            continue
        header = json.loads(line)
        length = header.get("length")
        if length is None:
            end = body.find(b"\n", pos)
            end = len(body) if end == -1 else end
            raw = body[pos:end]
            pos = end + 1
        else:
            raw = body[pos : pos + length]
            pos += length + 1
        payload = json.loads(raw) if header.get("type") in JSON_TYPES else raw
        items.append((header, payload))
    return Envelope(headers, items)


JSON_TYPES = {"transaction", "event", "profile", "profile_chunk", "client_report", "session", "span"}


class Receiver:
    """delay_s: seconds each request waits before it is read (a slow Sentry);
    port: listen there (0: any free port), to come back where a closed one was."""

    def __init__(self, delay_s: float = 0.0, port: int = 0) -> None:
        self.delay_s = delay_s
        self.requests = 0
        self.envelopes: list[Envelope] = []
        self.raw_items: list[tuple[dict[str, Any], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with receiver.lock:
                    receiver.requests += 1
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                elif self.headers.get("Content-Encoding") == "br":
                    import brotli  # type: ignore[import-not-found]

                    body = brotli.decompress(body)
                envelope = parse_envelope(body)
                with receiver.lock:
                    receiver.envelopes.append(envelope)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.dsn = f"http://public@127.0.0.1:{self.server.server_address[1]}/1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def items(self, kind: str) -> list[tuple[Envelope, Any]]:
        with self.lock:
            return [
                (envelope, payload)
                for envelope in self.envelopes
                for header, payload in envelope.items
                if header["type"] == kind
            ]

    def payloads(self, kind: str) -> list[Any]:
        return [payload for _, payload in self.items(kind)]

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {[e.types() for e in self.envelopes]}")
            time.sleep(0.02)

    def clear(self) -> None:
        with self.lock:
            self.envelopes.clear()

    def outcomes(self) -> list[tuple[str, str]]:
        """(reason, category) of every discarded event in client reports."""
        found = []
        for report in self.payloads("client_report"):
            for entry in report.get("discarded_events", []):
                found.extend([(entry["reason"], entry["category"])] * int(entry["quantity"]))
        return found


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


__all__ = ["Envelope", "Optional", "Receiver", "parse_envelope", "wait_until"]
