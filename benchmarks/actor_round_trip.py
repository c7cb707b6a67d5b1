"""An actor call's round trip: ``counter.increment().result()`` from a sync client.

    python benchmarks/actor_round_trip.py [--n N] [--warmup W] [--systems trioclust,dask]

Each system gets its own cluster (clusters.py: a scheduler process and two
nanny-supervised one-thread worker processes on tcp://127.0.0.1); one
``Counter`` actor is made, then ``N`` calls are timed one by one after ``W``
untimed ones. dask is measured only where ``distributed`` is importable (the
bench venv: ``make .venv-bench/.installed-bench``). Prints one JSON line per
system: median, 99th percentile, mean and minimum in microseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clusters import open_cluster, sync_client  # noqa: E402
from scenarios_latency import summarize  # noqa: E402


class Counter:
    """The Actors page's counter."""

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n


def measure(system: str, n: int, warmup: int) -> dict[str, object]:
    with open_cluster(system, 2) as info, sync_client(info) as client:
        counter = client.submit(Counter, actor=True).result()
        for _ in range(warmup):
            counter.increment().result()
        samples = []
        for i in range(n):
            start = time.perf_counter()
            value = counter.increment().result()
            samples.append(time.perf_counter() - start)
            assert value == warmup + i + 1
        del counter
        return {"system": system, "scenario": "actor-round-trip", **summarize(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--systems", default="trioclust,dask")
    args = parser.parse_args()
    for system in args.systems.split(","):
        if system.startswith("dask"):
            try:
                import distributed  # noqa: F401
            except ImportError:
                print(json.dumps({"system": system, "skipped": "distributed is not installed"}))
                continue
        print(json.dumps(measure(system, args.n, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
