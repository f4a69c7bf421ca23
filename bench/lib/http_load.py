"""A small closed-loop HTTP load generator: N client processes, keep-alive http.client.

Each client sends one request at a time and the next as soon as the answer is read (closed
loop), reconnecting whenever the server closes the connection (gunicorn's sync workers close
after every response). Clients are processes, not threads, so the generator's own GIL does not
cap the rate on a small machine. Every client warms up first (gunicorn loads the app in each
worker on its first request, which takes seconds on a busy machine); the measuring window
starts when all of them are warm.
"""

import http.client
import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.lib import procs

# Successful requests each client makes before the window, whatever the warm-up time.
WARM_REQUESTS = 3
WARM_TIMEOUT = 120.0


@dataclass
class LoadResult:
    """What the clients saw inside the measuring window, and the server's CPU time in it."""

    seconds: float
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    server_cpu_seconds: float | None = None

    @property
    def per_second(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds

    @property
    def cpu_ms_per_request(self) -> float | None:
        """Server CPU milliseconds per successful request."""
        if self.server_cpu_seconds is None or not self.ok:
            return None
        return self.server_cpu_seconds / self.ok * 1000


def _post(conn: http.client.HTTPConnection, path: str, payload: bytes, headers: dict) -> int:
    """One request; its status, or 0 when the connection failed."""
    try:
        conn.request("POST", path, body=payload, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        conn.close()
        return 0


def _client(
    index: int,
    clients: int,
    port: int,
    path: str,
    headers: dict[str, str],
    body: Callable[[int], dict],
    warmup: float,
    seconds: float,
    barrier: threading.Barrier,
    results: multiprocessing.Queue,
) -> None:
    """One client: warm up, wait for the others, then loop for `seconds`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    number = index

    def payload() -> bytes:
        nonlocal number
        number += clients
        return json.dumps(body(number)).encode()

    warm_ok, started = 0, time.monotonic()
    while warm_ok < WARM_REQUESTS or time.monotonic() - started < warmup:
        if time.monotonic() - started > WARM_TIMEOUT:
            break
        warm_ok += 200 <= _post(conn, path, payload(), headers) < 300
    barrier.wait(timeout=WARM_TIMEOUT * 2)
    end_at = time.monotonic() + seconds
    latencies, statuses, errors = [], Counter(), 0
    while (began := time.monotonic()) < end_at:
        code = _post(conn, path, payload(), headers)
        ended = time.monotonic()
        if ended > end_at:
            break
        statuses[code] += 1
        if 200 <= code < 300:
            latencies.append((ended - began) * 1000)
        else:
            errors += 1
    conn.close()
    results.put({"latencies": latencies, "statuses": dict(statuses), "errors": errors})


def run_load(
    *,
    port: int,
    path: str,
    body: Callable[[int], dict],
    headers: dict[str, str] | None = None,
    clients: int = 4,
    seconds: float = 10,
    warmup: float = 1,
    server_pid: int | None = None,
) -> LoadResult:
    """POST JSON bodies (body(n) for request n) with `clients` processes for `seconds`.

    With server_pid, the CPU time of that process and its children during the window is
    measured too.
    """
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    barrier = context.Barrier(clients + 1)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    workers = [
        context.Process(
            target=_client,
            args=(i, clients, port, path, all_headers, body, warmup, seconds, barrier, results),
        )
        for i in range(clients)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=WARM_TIMEOUT * 2)
    cpu = procs.tree_cpu_seconds(server_pid) if server_pid else None
    time.sleep(seconds)
    if server_pid:
        cpu = procs.tree_cpu_seconds(server_pid) - cpu
    # Read before joining: a child cannot exit while its result still fills the pipe.
    collected = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join()
    result = LoadResult(seconds=seconds, server_cpu_seconds=cpu)
    for part in collected:
        result.latencies_ms.extend(part["latencies"])
        result.errors += part["errors"]
        result.statuses.update({int(k): v for k, v in part["statuses"].items()})
    result.ok = len(result.latencies_ms)
    return result
