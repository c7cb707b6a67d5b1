"""The Cluster base on a LocalCluster: scale by workers, cores, memory;
adapt() scaling with a burst of work and back (Dask's "Adaptive deployments",
docs/source/adaptive.rst: ``cluster.adapt(minimum=0, maximum=100)``)."""

from __future__ import annotations

import logging
import math
import time

import pytest
import trio

from trioclust import Adaptive, Client, Cluster, LocalCluster


def work(x: int) -> int:
    time.sleep(0.02)  # stands for a one-second task, scaled down
    return x + 1


def test_scale_by_cores_and_memory_and_adapt_from_sync_code() -> None:
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, memory_limit="1GiB", dashboard_address=None
    ) as cluster:
        assert isinstance(cluster, Cluster)
        cluster.scale(cores=6)  # 3 workers of 2 threads
        cluster.wait_for_workers(3, timeout=30)
        assert "workers=3, threads=6, memory=3.00 GiB" in repr(cluster)
        cluster.scale(memory="2GiB")
        assert len(cluster.workers) == 2
        cluster.scale(jobs=1)
        assert len(cluster.workers) == 1
        adaptive = cluster.adapt(minimum=1, maximum=3, interval="10ms", target_duration="1s")
        assert isinstance(adaptive, Adaptive)
        assert (adaptive.minimum, adaptive.maximum) == (1, 3)
        assert "Adaptive" in cluster._repr_html_()
        cluster.scale(2)  # by hand: adaptivity stops
        assert cluster.adaptive is None
        assert len(cluster.workers) == 2
        with pytest.raises(ValueError, match="Cannot scale to -1"):
            cluster.scale(-1)


def test_scale_by_memory_needs_a_memory_limit() -> None:
    with LocalCluster(n_workers=0, processes=False, memory_limit=None, dashboard_address=None) as cluster:
        with pytest.raises(ValueError, match="memory limit"):
            cluster.scale(memory="1GiB")


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("2min", 120.0), (3, 3.0)])
def test_adapt_takes_dask_durations(text: str | float, seconds: float) -> None:
    from trioclust.deploy.adaptive import parse_seconds

    assert parse_seconds(text) == seconds


@pytest.mark.trio
async def test_adapt_scales_up_for_a_burst_and_back_to_the_minimum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.adaptive")
    async with LocalCluster(
        n_workers=0, threads_per_worker=1, processes=False, asynchronous=True, dashboard_address=None
    ) as cluster:
        adaptive = await cluster.adapt(
            minimum=0, maximum=4, interval="20ms", wait_count=3, target_duration="500ms"
        )
        async with Client(cluster, asynchronous=True) as client:
            futures = client.map(work, range(200))
            with trio.fail_after(60):
                await cluster.wait_for_jobs(4)
                assert await client.gather(futures) == [x + 1 for x in range(200)]
                del futures
                await cluster.wait_for_jobs(0)
        actions = [d.action for d in adaptive.log]
        assert "up" in actions
        assert "down" in actions
        assert max(d.target for d in adaptive.log) == 4
        assert adaptive.log[-1].target == 0
        messages = [r.getMessage() for r in caplog.records if r.name == "trioclust.adaptive"]
        assert any(m.startswith("adaptive: up (target 4") for m in messages)
        assert any(m.startswith("adaptive: down") for m in messages)
    assert not math.isinf(adaptive.maximum)
