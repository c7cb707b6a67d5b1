"""A client whose scheduler goes away (issue 18): it fails its pending futures
with SchedulerLostError at once, reconnects to a scheduler that comes back on
the same address within ``client.reconnect-timeout`` (new work then goes
through), and past that timeout every call raises at once. Under trio and
asyncio."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from trioclust import Client, Scheduler, SchedulerLostError, Worker, config
from trioclust.transport.addresses import parse_address, parse_host_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def reconnect_timeout() -> Iterator[float]:
    with config.set(**{"client.reconnect-timeout": 20.0}):
        yield 20.0


def inc(x: int) -> int:
    return x + 1


def port_of(address: str) -> int:
    return parse_host_port(parse_address(address)[1])[1]


async def test_a_client_reconnects_to_a_scheduler_that_comes_back(reconnect_timeout: float) -> None:
    first = Scheduler()
    await first.__aenter__()
    try:
        port = port_of(first.address)
        async with Client(first.address, asynchronous=True) as client:
            pending = client.submit(inc, 1)  # no worker: it waits
            await first.close()
            with anyio.fail_after(10), pytest.raises(SchedulerLostError, match="reconnect"):
                await pending
            assert client.status == "reconnecting"
            with pytest.raises(SchedulerLostError, match="reconnecting"):
                client.submit(inc, 2)
            async with Scheduler(port=port) as second, Worker(second.address):
                with anyio.fail_after(reconnect_timeout):
                    await client._core.wait_connected()
                assert client.status == "running"
                assert await client.submit(inc, 3) == 4
                assert await client.gather(client.map(inc, range(10))) == list(range(1, 11))
                with pytest.raises(SchedulerLostError):
                    await pending  # the lost one stays lost
    finally:
        await first.close()  # closing twice is harmless


async def test_past_the_reconnect_timeout_every_call_raises_at_once() -> None:
    with config.set(**{"client.reconnect-timeout": 0.3}):
        scheduler = Scheduler()
        await scheduler.__aenter__()
        try:
            async with Client(scheduler.address, asynchronous=True) as client:
                pending = client.submit(inc, 1)  # no worker: it waits
                await scheduler.close()
                with anyio.fail_after(10), pytest.raises(SchedulerLostError, match="reconnect"):
                    await pending  # the client saw the loss
                with anyio.fail_after(10), pytest.raises(SchedulerLostError, match="disconnected"):
                    await client._core.wait_connected()  # it gives up after 0.3 s
                assert client.status == "disconnected"
                with pytest.raises(SchedulerLostError, match="disconnected"):
                    client.submit(inc, 1)
        finally:
            await scheduler.close()


async def test_with_no_reconnect_timeout_the_client_gives_up_at_once() -> None:
    with config.set(**{"client.reconnect-timeout": 0}):
        scheduler = Scheduler()
        await scheduler.__aenter__()
        try:
            async with Client(scheduler.address, asynchronous=True) as client:
                pending = client.submit(inc, 1)
                await scheduler.close()
                with anyio.fail_after(10), pytest.raises(SchedulerLostError, match="create a new Client"):
                    await pending
                assert client.status == "disconnected"
                with pytest.raises(SchedulerLostError):
                    client.submit(inc, 1)
        finally:
            await scheduler.close()
