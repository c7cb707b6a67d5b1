"""Scenario g: b and c again, from async code: ``Client(asynchronous=True)``.

trioclust runs the same async code under ``trio.run`` and under
``asyncio.run``, one after the other on one cluster, and the synchronous
client's figures on that same cluster for reference; the target compares
asyncio with trio. dask runs it under ``asyncio.run`` (it cannot run under
trio). Round trips are ``await client.submit(inc, i, pure=False)``, maps
``await client.gather(client.map(inc, range(N), pure=False))``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import scenarios_latency
import scenarios_throughput
from bench_tasks import inc
from clusters import is_dask, open_cluster, sync_client
from sizes import Sizes


async def _open_client(system: str, address: str) -> Any:
    if is_dask(system):
        from distributed import Client as DaskClient

        return await DaskClient(address, asynchronous=True, set_as_default=False)
    from trioclust import Client

    return await Client(address, asynchronous=True)


async def bench(system: str, address: str, sizes: Sizes) -> dict[str, Any]:
    client = await _open_client(system, address)
    try:
        for i in range(sizes.latency_warmup):
            assert await client.submit(inc, i, pure=False) == i + 1
        samples = []
        for i in range(sizes.asyncio_latency_n):
            start = time.perf_counter()
            value = await client.submit(inc, i, pure=False)
            samples.append(time.perf_counter() - start)
            assert value == i + 1
        out: dict[str, Any] = {"latency": scenarios_latency.summarize(samples), "map": {}}
        for n in sizes.asyncio_map_ns:
            runs = []
            for _ in range(sizes.map_repeats):
                start = time.perf_counter()
                futures = client.map(inc, range(n), pure=False)
                results = await client.gather(futures)
                runs.append(time.perf_counter() - start)
                assert sum(results) == n * (n + 1) // 2, "wrong sum"
                del futures, results
                await anyio.sleep(scenarios_throughput.SETTLE_SECONDS)
            out["map"][str(n)] = {"tasks_per_s": n / min(runs), "runs_s": runs}
        return out
    finally:
        await client.close()


def _sync(client: Any, sizes: Sizes) -> dict[str, Any]:
    samples = scenarios_latency.measure(client, sizes.asyncio_latency_n, sizes.latency_warmup)
    out: dict[str, Any] = {"latency": scenarios_latency.summarize(samples), "map": {}}
    for n in sizes.asyncio_map_ns:
        runs = [scenarios_throughput.measure_map(client, n) for _ in range(sizes.map_repeats)]
        out["map"][str(n)] = {"tasks_per_s": n / min(runs), "runs_s": runs}
    return out


def run(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    with open_cluster(system, n_workers) as info:
        if is_dask(system):
            return {"asyncio": asyncio.run(bench(system, info.scheduler_address, sizes))}
        import trio

        out = {
            "trio": trio.run(bench, system, info.scheduler_address, sizes),
            "asyncio": asyncio.run(bench(system, info.scheduler_address, sizes)),
        }
        with sync_client(info) as client:
            out["sync"] = _sync(client, sizes)
        return out
