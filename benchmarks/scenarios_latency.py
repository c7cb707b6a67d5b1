"""Scenario b: sequential ``submit(inc, i, pure=False).result()`` round trips from a sync client.

Each round trip is timed on its own (``time.perf_counter``), after a warm-up;
the median and the 99th percentile are reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench_tasks import inc
from clusters import open_cluster, sync_client
from sizes import Sizes


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100)."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def summarize(samples: list[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": percentile(samples, 99) * 1e6,
        "mean_us": statistics.fmean(samples) * 1e6,
        "min_us": min(samples) * 1e6,
    }


def measure(client: Any, n: int, warmup: int) -> list[float]:
    """Seconds per round trip, ``n`` of them after ``warmup`` untimed ones."""
    for i in range(warmup):
        assert client.submit(inc, i, pure=False).result() == i + 1
    samples = []
    for i in range(n):
        start = time.perf_counter()
        value = client.submit(inc, i, pure=False).result()
        samples.append(time.perf_counter() - start)
        assert value == i + 1
    return samples


def run(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    with open_cluster(system, n_workers) as info, sync_client(info) as client:
        return summarize(measure(client, sizes.latency_n, sizes.latency_warmup))
