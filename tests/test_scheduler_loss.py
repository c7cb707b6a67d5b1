"""Losing the scheduler: workers keep trying for ``worker.reconnect-timeout``
whatever fails, and register again with a scheduler restarted on the same
port; otherwise they stop with a clear ``close_reason``.

As Dask's ``--death-timeout`` (``distributed/cli/dask_worker.py``): a worker
whose scheduler is gone for that long shuts down.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import anyio
import pytest
import trio

from trioclust import Client, Scheduler, Worker, config, transport
from trioclust.runtime.nanny import Nanny
from trioclust.transport.addresses import parse_address, parse_host_port

pytestmark = pytest.mark.anyio

REPO_ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def port_of(address: str) -> int:
    return parse_host_port(parse_address(address)[1])[1]


async def registered(scheduler: Scheduler, n: int = 1) -> None:
    with anyio.fail_after(20):
        await scheduler.wait_for_workers(n)


async def test_a_worker_rejoins_a_scheduler_restarted_on_the_same_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.worker")
    first = Scheduler()
    async with anyio.create_task_group() as tg:
        await tg.start(first.serve)
        port = port_of(first.address)
        worker = Worker(first.address, reconnect_timeout=30)
        await tg.start(worker.serve)
        await registered(first)
        await first.close()
        # the port answers, but resets every connection during the handshake
        resets = 0
        enough = trio.Event()
        listener = await transport.listen(f"tcp://127.0.0.1:{port}")

        async def reset(stream: anyio.abc.ByteStream) -> None:
            nonlocal resets
            await anyio.aclose_forcefully(stream)
            resets += 1
            if resets == 3:
                enough.set()

        async with anyio.create_task_group() as resetting:
            resetting.start_soon(listener.serve, reset)
            with anyio.fail_after(20):
                await enough.wait()
            await listener.aclose()
            resetting.cancel_scope.cancel()
        assert worker.status == "running"  # resets mid-handshake are retried
        async with Scheduler(port=port) as second:
            await registered(second)
            async with Client(second.address, asynchronous=True) as client:
                assert await client.submit(lambda: 1 + 1) == 2
        await worker.close()
    assert "registered again" in caplog.text


async def test_a_worker_stops_after_the_reconnect_timeout() -> None:
    async with Scheduler() as s:
        worker = Worker(s.address, reconnect_timeout=0.3)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.serve)
            await registered(s)
            await s.close()
            with anyio.fail_after(20):
                await worker.wait_closed()
    assert worker.close_reason is not None
    assert "could not reconnect within 0.3 s (worker.reconnect-timeout" in worker.close_reason


@pytest.mark.slow
async def test_a_nanny_does_not_restart_a_worker_into_a_cluster_that_is_gone(
    tmp_path: Path,
) -> None:
    """The worker dies; its replacements cannot reach the scheduler (the fake
    ``crash-then-fail`` mode): the nanny stops after the reconnect-timeout."""
    env = {
        "PYTHONPATH": REPO_ROOT, "FAKE_WORKER_MODE": "crash-then-fail",
        "FAKE_WORKER_MARKER": str(tmp_path / "crashed"),
    }
    with config.set(nanny__restart_backoff=0.05):
        nanny = Nanny(
            "tcp://127.0.0.1:1", _worker_module="tests._fake_worker", env=env, reconnect_timeout=0.5
        )
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                await tg.start(nanny.serve)
                await nanny.wait_closed()  # serve() ends by itself
    assert nanny.close_reason is not None
    assert "the nanny starts no more" in nanny.close_reason
    assert "worker.reconnect-timeout 0.5 s" in nanny.close_reason
    assert nanny.restarts >= 1
    assert nanny.worker_pid is None


async def test_a_fetch_from_a_peer_that_does_not_answer_times_out() -> None:
    """A frozen peer (it completed the handshake, then never replies) holds
    a fetch for at most ``worker.fetch-timeout``; the worker then counts
    on other holders, or the scheduler recomputes (see GatherFailed)."""
    from trioclust.comm import Comm, serve

    async def frozen(comm: Comm) -> None:
        await trio.sleep_forever()

    with config.set(**{"worker.fetch-timeout": 0.2}):
        async with Scheduler() as s, Worker(s.address) as worker:
            async with anyio.create_task_group() as tg:
                listener = await tg.start(
                    partial(serve, "tcp://127.0.0.1:0", frozen, role="worker")
                )
                with anyio.fail_after(10), pytest.raises(TimeoutError, match=r"worker\.fetch-timeout"):
                    await worker._fetch(listener.contact_address, ["x"])
                tg.cancel_scope.cancel()
