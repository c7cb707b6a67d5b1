"""Chaos, the long version (issue 18): a random worker SIGKILLed every 2 s
during a 20,000-task graph, trioclust against Dask under the same kills.

The graph: ``map(inc, range(10_000))`` and a tree reduction of it by pairs
(9,999 ``add``), submitted at once; a killer thread SIGKILLs one of the
worker processes (each under a nanny, which starts a new one) every
``--every`` seconds, chosen by a seeded random generator, until the result is
in. Both systems get ``allowed-failures`` of 1,000, so that no key ends as
KilledWorker. Reported: wall time from submission to result, the kills, and
whether the result is right. The short version is tests/test_chaos.py.

Run with the bench venv (``make .venv-bench/.installed-bench``)::

    .venv-bench/bin/python benchmarks/chaos.py [--tasks 20000] [--workers 3] [--every 2]

Without dask installed only trioclust runs, and it says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
)
os.environ["TRIOCLUST_SCHEDULER__ALLOWED_FAILURES"] = "1000"
os.environ["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "1000"

from bench_tasks import add, inc
from clusters import DaskCluster, TrioclustCluster, sync_client


def worker_pids(system: str) -> list[int]:
    """The worker processes now alive (not the nannies), among this process's descendants."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if system == "trioclust" and "trioclust.runtime.worker_process" in cmd:
            pids.append(proc.pid)
        elif system == "dask" and "spawn_main" in cmd and "resource_tracker" not in cmd:
            pids.append(proc.pid)
    return pids


def tree_sum(client: Any, futures: list[Any]) -> Any:
    while len(futures) > 1:
        pairs = list(zip(futures[0::2], futures[1::2], strict=False))
        layer = client.map(add, [a for a, _ in pairs], [b for _, b in pairs], pure=False)
        futures = layer + (futures[-1:] if len(futures) % 2 else [])
    return futures[0]


def run(system: str, n_tasks: int, n_workers: int, every: float, seed: int) -> dict[str, Any]:
    cluster = TrioclustCluster(n_workers) if system == "trioclust" else DaskCluster(n_workers)
    n = n_tasks // 2
    rng = random.Random(seed)
    kills: list[float] = []
    stop = threading.Event()
    with cluster as info, sync_client(info) as client:

        def killer() -> None:
            start = time.monotonic()
            while not stop.wait(every):
                pids = worker_pids(system)
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    kills.append(round(time.monotonic() - start, 2))

        thread = threading.Thread(target=killer)
        start = time.perf_counter()
        thread.start()
        try:
            total = tree_sum(client, client.map(inc, range(n), pure=False))
            value = total.result(timeout=900)
            elapsed = time.perf_counter() - start
        finally:
            stop.set()
            thread.join()
    return {
        "system": system, "tasks": 2 * n - 1, "workers": n_workers, "kill_every_s": every,
        "seconds": round(elapsed, 2), "kills": len(kills), "right": value == sum(range(1, n + 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--systems", default="trioclust,dask")
    args = parser.parse_args()
    systems = args.systems.split(",")
    try:
        import distributed  # noqa: F401
    except ImportError:
        if "dask" in systems:
            print("dask.distributed is not installed: trioclust alone", file=sys.stderr)
            systems.remove("dask")
    for system in systems:
        print(json.dumps(run(system, args.tasks, args.workers, args.every, args.seed)), flush=True)


if __name__ == "__main__":
    main()
