"""A network partition (issue 18): a worker in its own network namespace
whose link goes down for longer than ``scheduler.worker-ttl`` is removed, its
results are recomputed elsewhere, and it rejoins once the link is back.

Root only: the namespace, a veth pair and a bridge are made as in
tests/ssh_hosts.py and removed at the end. The scheduler and one worker run
in this process, on the bridge's address; the cut-off worker is a
``trioclust.runtime.worker_process`` started with ``ip netns exec``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import trio

from trioclust import Client, Scheduler, Worker

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
TTL = 2.0  # seconds without a heartbeat before the scheduler removes a worker


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def missing() -> str | None:
    """Why the namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "a worker in its own network namespace needs root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class OneHost:
    """A network namespace joined to a bridge in this namespace by a veth pair."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}"
        self.subnet = f"10.{130 + os.getpid() % 60}.0"
        self.outer_address = f"{self.subnet}.1"
        self.inner_address = f"{self.subnet}.2"
        self.bridge = f"tpbr{tag}"
        self.namespace = f"tpns{tag}"
        self.veth = f"tpv{tag}o"
        self._made: list[list[str]] = []  # the commands that remove what was made

    def start(self) -> None:
        try:
            inner = f"tpv{os.getpid() % 10000}i"
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self._made.append(["ip", "link", "del", self.bridge])
            _run("ip", "addr", "add", f"{self.outer_address}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            _run("ip", "netns", "add", self.namespace)
            self._made.append(["ip", "netns", "del", self.namespace])
            _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", inner)
            self._made.append(["ip", "link", "del", self.veth])
            _run("ip", "link", "set", self.veth, "master", self.bridge, "up")
            _run("ip", "link", "set", inner, "netns", self.namespace)
            _run("ip", "-n", self.namespace, "link", "set", "lo", "up")
            _run("ip", "-n", self.namespace, "addr", "add", f"{self.inner_address}/24", "dev", inner)
            _run("ip", "-n", self.namespace, "link", "set", inner, "up")
        except BaseException:
            self.close()
            raise

    def cut(self, up: bool = False) -> None:
        _run("ip", "link", "set", self.veth, "up" if up else "down")

    def close(self) -> None:
        for cmd in reversed(self._made):  # the veth, the namespace, the bridge
            subprocess.run(cmd, capture_output=True, check=False)
        self._made.clear()


async def test_a_worker_cut_off_past_the_ttl_is_removed_recomputed_and_rejoins() -> None:
    def inc(x: int) -> int:  # made here: cloudpickle sends it by value to the other process
        return x + 1

    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    host = OneHost()
    host.start()
    try:
        async with (
            Scheduler(host=host.outer_address, worker_ttl=TTL) as scheduler,
            Worker(scheduler.address, nthreads=2, name="here"),
        ):
            env = dict(
                os.environ, PYTHONPATH=REPO_ROOT, TRIOCLUST_WORKER__HEARTBEAT_INTERVAL="0.2",
            )
            process = await trio.lowlevel.open_process(
                ["ip", "netns", "exec", host.namespace, sys.executable, "-m",
                 "trioclust.runtime.worker_process", "--scheduler", scheduler.address,
                 "--nthreads", "2", "--name", "there", "--reconnect-timeout", "120"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            )
            try:
                with anyio.fail_after(30):
                    await scheduler.wait_for_workers(2)
                (there,) = (a for a in scheduler.state.workers if host.inner_address in a)
                async with Client(scheduler.address, asynchronous=True) as client:
                    futures = client.map(inc, range(40))
                    assert await client.gather(futures) == list(range(1, 41))
                    who_has = await client.who_has(futures)
                    on_there = [k for k, holders in who_has.items() if there in holders]
                    assert on_there, "no result landed on the worker to cut off"

                    host.cut()
                    with anyio.fail_after(TTL * 10):
                        while there in scheduler.state.workers:
                            await scheduler._workers_changed.wait()
                    # its results are recomputed here, and new work depends on them
                    total = client.submit(sum, futures)
                    with anyio.fail_after(30):
                        assert await total == sum(range(1, 41))
                        assert await client.gather(futures) == list(range(1, 41))

                    host.cut(up=True)
                    with anyio.fail_after(60):
                        await scheduler.wait_for_workers(2)
                    assert any(host.inner_address in a for a in scheduler.state.workers)
                    assert await client.gather(client.map(inc, range(100, 140))) == list(range(101, 141))
            finally:
                assert process.stdin is not None
                await process.stdin.aclose()  # end of file: the worker closes
                with anyio.move_on_after(20):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    finally:
        host.close()
