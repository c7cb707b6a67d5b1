"""Chaos (issue 18): a random worker SIGKILLed every 2 s while a graph runs.

Three worker processes under nannies (the task functions are made inside the
test, so that cloudpickle sends them by value); a killer thread kills one at random
every 2 s until the graph's result is in, and each nanny starts a new worker.
Every result must be right: the scheduler recomputes what a dead worker held
and reruns what it was running. A task that was running on a killed worker
counts a failure against it, so ``scheduler.allowed-failures`` is raised
here: with kills this frequent, a key may be unlucky more than three times.
The long version, timed against Dask, is benchmarks/chaos.py.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any

import pytest

from trioclust import Client, LocalCluster

pytestmark = pytest.mark.slow


def tree_sum(client: Client, futures: list[Any], add: Any) -> Any:
    """Sum ``futures`` by pairs, layer by layer, down to one future."""
    while len(futures) > 1:
        pairs = list(zip(futures[0::2], futures[1::2], strict=False))
        layer = client.map(add, [a for a, _ in pairs], [b for _, b in pairs], pure=False)
        futures = layer + (futures[-1:] if len(futures) % 2 else [])
    return futures[0]


def test_a_5000_task_graph_is_right_while_a_random_worker_is_killed_every_2s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # made here, so that cloudpickle sends them by value to the worker processes
    def work(x: int) -> int:
        # work the kills interrupt: 2,500 x 12 ms on 6 threads lasts 5 s at
        # the very least, so the kills at 2 s and 4 s always come in time
        time.sleep(0.012)
        return x + 1

    def add(a: int, b: int) -> int:
        return a + b

    monkeypatch.setenv("TRIOCLUST_SCHEDULER__ALLOWED_FAILURES", "1000")
    n = 2500  # 2,500 maps and 2,499 adds
    rng = random.Random(18)
    kills: list[int] = []
    stop = threading.Event()
    with (
        LocalCluster(n_workers=3, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        nannies = list(cluster.workers.values())

        def killer() -> None:
            while not stop.wait(2.0):
                pids = [p for p in (nanny.worker_pid for nanny in nannies) if p is not None]
                if not pids:
                    continue
                pid = rng.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                kills.append(pid)

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            mapped = client.map(work, range(n))
            total = tree_sum(client, mapped, add)
            assert total.result(timeout=50) == sum(range(1, n + 1))
            sample = rng.sample(range(n), 50)
            assert client.gather([mapped[i] for i in sample]) == [i + 1 for i in sample]
        finally:
            stop.set()
            thread.join()
        assert len(kills) >= 2, f"the graph ended before the kills: {len(kills)}"
        assert client.submit(add, 1, 2).result(timeout=30) == 3
