"""Fetching results from workers: a holder the client cannot reach is an error, not a spin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from trioclust import Client, Scheduler, Worker, config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def c() -> AsyncIterator[tuple[Client, Worker]]:
    async with Scheduler() as s, Worker(s.address) as worker:
        async with Client(s.address, asynchronous=True) as client:
            yield client, worker


def big(n: int) -> bytes:
    return bytes(n)  # over worker.inline-result-limit: the client fetches it


async def test_gather_from_an_unreachable_holder_fails_within_the_timeout(
    c: tuple[Client, Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, worker = c
    future = client.submit(big, 1_000_000)
    await client.gather([client.submit(len, future)])  # computed, held by the worker only
    tries: list[str] = []

    async def unreachable(address: str) -> Any:
        tries.append(address)
        raise ConnectionRefusedError(f"this client cannot reach {address}")

    monkeypatch.setattr(client._core._pool, "get", unreachable)
    with config.set(**{"comm.timeouts.connect": 0.2}):
        with anyio.fail_after(20):  # the old poll never ended: this stops it
            with pytest.raises(TimeoutError, match="Could not get 1 key") as info:
                await client.gather(future)
            with pytest.raises(TimeoutError, match="Could not get 1 key"):
                await future.result()
    message = str(info.value)
    assert future.key in message
    assert worker.address in message
    assert "cannot reach" in message
    assert "comm.timeouts.connect" in message
    assert tries == [worker.address] * 2  # one try per call, then a wait for news: no spin

    monkeypatch.undo()  # reachable again: the same future's data comes
    assert len(await future) == 1_000_000

