"""A small web-style service to profile: a request loop that parses JSON
bodies, does some CPU work, waits on a (simulated) database and renders a
JSON response. Two worker threads serve requests from a queue, like a
threaded WSGI server. Runs for about four seconds.

    sigprof run examples/webapp.py
    sigprof run examples/webapp.py --requests 100
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import random
import threading
import time
from typing import Any

PRODUCTS = [{"id": i, "name": f"product-{i}", "price": round(random.uniform(1, 100), 2)} for i in range(400)]


def query_database(user_id: int) -> list[dict[str, Any]]:
    """A database round trip: mostly waiting on the network."""
    time.sleep(0.004)
    rng = random.Random(user_id)
    return rng.sample(PRODUCTS, 100)


def score(product: dict[str, Any], user_id: int) -> float:
    """Recommendation scoring: pure-Python CPU work."""
    total = 0.0
    seed = f"{user_id}:{product['id']}".encode()
    for _ in range(10):
        seed = hashlib.sha256(seed).digest()
        for byte in seed:
            total += (byte * product["price"]) % 7.3
    return total


def recommend(user_id: int, products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = sorted(products, key=lambda p: score(p, user_id), reverse=True)
    return ranked[:10]


def render(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=True)


def handle_request(body: str) -> str:
    request = json.loads(body)
    user_id = int(request["user_id"])
    products = query_database(user_id)
    picks = recommend(user_id, products)
    return render({"user_id": user_id, "recommendations": picks, "count": len(picks)})


def worker(requests: queue.Queue[str | None], responses: list[int]) -> None:
    while True:
        body = requests.get()
        if body is None:
            return
        responses.append(len(handle_request(body)))


def serve(count: int, workers: int) -> int:
    requests: queue.Queue[str | None] = queue.Queue()
    responses: list[int] = []
    threads = [
        threading.Thread(target=worker, args=(requests, responses), name=f"worker-{i}")
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    for number in range(count):
        requests.put(json.dumps({"user_id": number % 97, "path": "/recommendations"}))
        time.sleep(0.006)  # requests arrive over time
    for _ in threads:
        requests.put(None)
    for thread in threads:
        thread.join()
    return sum(responses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    started = time.perf_counter()
    size = serve(options.requests, options.workers)
    elapsed = time.perf_counter() - started
    print(f"served {options.requests} requests ({size} bytes) in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
