"""The issue's first program, exactly as a user runs it: under trio.run and asyncio.run."""

from __future__ import annotations

import asyncio

import pytest
import trio

from trioclust import Client, Scheduler, Worker


async def main() -> None:
    async with Scheduler() as scheduler:
        async with Worker(scheduler.address) as worker:  # noqa: F841 - as in the README
            async with Client(scheduler.address, asynchronous=True) as client:
                print(await client.submit(lambda: 1 + 1))


def test_prints_two_under_trio_run(capsys: pytest.CaptureFixture[str]) -> None:
    trio.run(main)
    assert capsys.readouterr().out == "2\n"


def test_prints_two_under_asyncio_run(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(main())
    assert capsys.readouterr().out == "2\n"
