"""Scenario g: b and c again, from async code: ``Client(asynchronous=True)``.

trioclust runs the same async code under ``trio.run`` and under
``asyncio.run`` on one cluster, in alternating blocks (round trips in
:data:`LATENCY_BLOCKS` blocks, each map repeat), each block a client session
of its own, so that neither loop is always measured after the other's maps
or in another phase of a noisy machine; then the synchronous client's
figures on that same cluster for reference. The target compares asyncio with
trio. dask runs it under ``asyncio.run`` (it cannot run under trio), in one
session. Round trips are ``await client.submit(inc, i, pure=False)``, maps
``await client.gather(client.map(inc, range(N), pure=False))``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
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


#: trioclust's round trips under each loop are measured in this many blocks, alternating
LATENCY_BLOCKS = 8


async def _round_trips(client: Any, n: int) -> list[float]:
    """Seconds per ``await submit(...)`` round trip, ``n`` of them."""
    samples = []
    for i in range(n):
        start = time.perf_counter()
        value = await client.submit(inc, i, pure=False)
        samples.append(time.perf_counter() - start)
        assert value == i + 1
    return samples


async def _map_seconds(client: Any, n: int) -> float:
    """Seconds for one ``gather(map(inc, range(n)))``, then a pause for its releases."""
    start = time.perf_counter()
    futures = client.map(inc, range(n), pure=False)
    results = await client.gather(futures)
    seconds = time.perf_counter() - start
    assert sum(results) == n * (n + 1) // 2, "wrong sum"
    del futures, results
    await anyio.sleep(scenarios_throughput.SETTLE_SECONDS)
    return seconds


async def _session(
    system: str, address: str, sizes: Sizes, work: Callable[[Any], Awaitable[Any]]
) -> Any:
    """``await work(client)`` on a fresh asynchronous client, after the warm-up round trips."""
    client = await _open_client(system, address)
    try:
        for i in range(sizes.latency_warmup):
            assert await client.submit(inc, i, pure=False) == i + 1
        return await work(client)
    finally:
        await client.close()


async def bench(system: str, address: str, sizes: Sizes) -> dict[str, Any]:
    """Round trips, then the maps, in one session (dask's side)."""

    async def work(client: Any) -> dict[str, Any]:
        samples = await _round_trips(client, sizes.asyncio_latency_n)
        out: dict[str, Any] = {"latency": scenarios_latency.summarize(samples), "map": {}}
        for n in sizes.asyncio_map_ns:
            runs = [await _map_seconds(client, n) for _ in range(sizes.map_repeats)]
            out["map"][str(n)] = {"tasks_per_s": n / min(runs), "runs_s": runs}
        return out

    out: dict[str, Any] = await _session(system, address, sizes, work)
    return out


def _alternating(address: str, sizes: Sizes) -> dict[str, Any]:
    """trioclust under trio and under asyncio, block by block, on one cluster."""

    def run_in(loop: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
        if loop == "trio":
            import trio

            return trio.run(_session, "trioclust", address, sizes, work)
        return asyncio.run(_session("trioclust", address, sizes, work))

    loops = ("trio", "asyncio")
    samples: dict[str, list[float]] = {loop: [] for loop in loops}
    per_block = -(-sizes.asyncio_latency_n // LATENCY_BLOCKS)
    for block in range(LATENCY_BLOCKS):
        for loop in loops if block % 2 == 0 else loops[::-1]:
            samples[loop] += run_in(loop, partial(_round_trips, n=per_block))
    # the figure compared is each loop's best of a few maps: best of two let
    # one slow phase of the machine decide it (one map in four runs)
    runs: dict[str, dict[int, list[float]]] = {loop: {} for loop in loops}
    for n in sizes.asyncio_map_ns:
        for repeat in range(sizes.asyncio_map_repeats):
            for loop in loops if repeat % 2 == 0 else loops[::-1]:
                runs[loop].setdefault(n, []).append(run_in(loop, partial(_map_seconds, n=n)))
    return {
        loop: {
            "latency": scenarios_latency.summarize(samples[loop]),
            "map": {
                str(n): {"tasks_per_s": n / min(runs[loop][n]), "runs_s": runs[loop][n]}
                for n in sizes.asyncio_map_ns
            },
        }
        for loop in loops
    }


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
        out = _alternating(info.scheduler_address, sizes)
        with sync_client(info) as client:
            out["sync"] = _sync(client, sizes)
        return out
