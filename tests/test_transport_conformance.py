"""Every transport backend passes the shared conformance suite, under trio and asyncio."""

from __future__ import annotations

import pytest

from trioclust.testing import transport_conformance as suite

ADDRESSES = {"tcp": "tcp://127.0.0.1:0", "inproc": "inproc://"}


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(ADDRESSES))
def address(request: pytest.FixtureRequest) -> str:
    return ADDRESSES[request.param]


@pytest.mark.anyio
async def test_small_messages(address: str) -> None:
    await suite.check_small_messages(address)


@pytest.mark.anyio
async def test_close_from_either_side(address: str) -> None:
    await suite.check_close_from_either_side(address)


@pytest.mark.anyio
async def test_abort_mid_message(address: str) -> None:
    await suite.check_abort_mid_message(address)


@pytest.mark.anyio
async def test_connect_refused(address: str) -> None:
    await suite.check_connect_refused(address, timeout=0.5)


@pytest.mark.slow
@pytest.mark.anyio
async def test_200_mb_message(address: str) -> None:
    await suite.check_large_message(address, nbytes=200_000_000)
