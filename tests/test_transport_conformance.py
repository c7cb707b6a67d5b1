"""Every transport backend passes the shared conformance suite, under trio and asyncio."""

from __future__ import annotations

import pytest

from trioclust import Security
from trioclust.testing import transport_conformance as suite

ADDRESSES = {
    "tcp": "tcp://127.0.0.1:0",
    "inproc": "inproc://",
    "tls": "tls://127.0.0.1:0",
    "ws": "ws://127.0.0.1:0",
    "wss": "wss://127.0.0.1:0",
}
# the schemes that need certificates; both ends use the same Security
SECURE = {"tls", "wss"}
SECURITY = Security.temporary()


@pytest.fixture(params=sorted(ADDRESSES))
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def address(scheme: str) -> str:
    return ADDRESSES[scheme]


@pytest.fixture
def security(scheme: str) -> Security | None:
    return SECURITY if scheme in SECURE else None


@pytest.mark.anyio
async def test_small_messages(address: str, security: Security | None) -> None:
    await suite.check_small_messages(address, security=security)


@pytest.mark.anyio
async def test_close_from_either_side(address: str, security: Security | None) -> None:
    await suite.check_close_from_either_side(address, security=security)


@pytest.mark.anyio
async def test_abort_mid_message(address: str, security: Security | None) -> None:
    await suite.check_abort_mid_message(address, security=security)


@pytest.mark.anyio
async def test_connect_refused(address: str, security: Security | None) -> None:
    await suite.check_connect_refused(address, timeout=0.5, security=security)


@pytest.mark.slow
@pytest.mark.anyio
async def test_200_mb_message(address: str, security: Security | None) -> None:
    await suite.check_large_message(address, nbytes=200_000_000, security=security)
