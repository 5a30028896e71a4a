"""Bounded HTTP load generator for the web workload (a separate process, so
its CPU is not charged to the server being profiled).

    python _loadgen.py PORT PATH REQUESTS CONNECTIONS

Connects, prints "ready", waits for a line on stdin, sends REQUESTS requests
over CONNECTIONS keep-alive connections to 127.0.0.1 only, then prints one
JSON line: wall seconds, errors and latency percentiles in milliseconds.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    requests, connections = int(sys.argv[3]), int(sys.argv[4])
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    clients = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(connections)
    ]
    for client in clients:
        client.connect()
    go = threading.Event()

    def drive(client: http.client.HTTPConnection, count: int) -> None:
        go.wait()
        mine: list[float] = []
        for _ in range(count):
            start = time.perf_counter()
            try:
                client.request("GET", path)
                response = client.getresponse()
                response.read()
                if response.status != 200:
                    errors[0] += 1
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                client.close()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    share = [
        requests // connections + (1 if i < requests % connections else 0)
        for i in range(connections)
    ]
    threads = [threading.Thread(target=drive, args=(c, n)) for c, n in zip(clients, share)]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
        )

    print(
        json.dumps(
            {
                "wall": wall,
                "requests": len(latencies),
                "errors": errors[0],
                "p50_ms": pct(0.50),
                "p99_ms": pct(0.99),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
