"""``ws://`` and ``wss://``: clusters over websockets, the dashboard's port, a standard client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from trioclust import (
    Client,
    EncryptionRequiredError,
    LocalCluster,
    ProtocolError,
    Scheduler,
    Security,
    Worker,
)
from trioclust.dashboard import COMM_PATH
from trioclust.errors import WebSocketHandshakeError
from trioclust.protocol import PROTOCOL_VERSION, FrameReader, dumps, frame_prefix

SECURITY = Security.temporary()


def comm_address(s: Scheduler) -> str:
    """``ws[s]://HOST:DASHBOARD_PORT/trioclust-comm`` of a scheduler's dashboard."""
    assert s.dashboard_link is not None
    link = s.dashboard_link.replace("https://", "wss://").replace("http://", "ws://")
    return link.replace("/status", COMM_PATH)


async def compute(address: str, security: Security | None = None) -> dict[str, Any]:
    async with Client(address, security=security, asynchronous=True) as client:
        assert await client.submit(lambda: 1 + 1) == 2
        big = await client.gather(client.submit(lambda: b"x" * 3_000_000))  # several ws messages
        assert len(big) == 3_000_000
        info: dict[str, Any] = await client.scheduler_info()
        return info


@pytest.fixture
async def ws_scheduler() -> AsyncIterator[Scheduler]:
    async with Scheduler(protocol="ws", dashboard_address=":0") as s:
        yield s


@pytest.mark.anyio
async def test_cluster_over_ws(ws_scheduler: Scheduler) -> None:
    assert ws_scheduler.address.startswith("ws://127.0.0.1:")
    async with Worker(ws_scheduler.address) as worker:
        assert worker.address.startswith("ws://127.0.0.1:")
        info = await compute(ws_scheduler.address)
        assert list(info["workers"]) == [worker.address]


@pytest.mark.anyio
async def test_dashboard_port_takes_comms(ws_scheduler: Scheduler) -> None:
    shared = comm_address(ws_scheduler)
    async with Worker(shared) as worker:  # registers through the dashboard's port
        info = await compute(shared)
        assert list(info["workers"]) == [worker.address]
        assert info["address"] == ws_scheduler.address
        await compute(ws_scheduler.address)  # the scheduler's own port serves on


@pytest.mark.anyio
async def test_cluster_over_wss() -> None:
    async with Scheduler(protocol="wss", security=SECURITY, dashboard_address=":0") as s:
        assert s.address.startswith("wss://127.0.0.1:")
        async with Worker(s.address, security=SECURITY) as worker:
            assert worker.address.startswith("wss://127.0.0.1:")
            info = await compute(s.address, SECURITY)
            assert list(info["workers"]) == [worker.address]
            with pytest.raises(EncryptionRequiredError, match="use wss://"):
                await Client(s.address.replace("wss://", "ws://"), security=SECURITY, asynchronous=True)


@pytest.mark.anyio
async def test_wss_dashboard_port_takes_authenticated_comms() -> None:
    async with Scheduler(protocol="wss", security=SECURITY, dashboard_address=":0") as s:
        assert s.dashboard_link is not None
        assert s.dashboard_link.startswith("https://127.0.0.1:")
        shared = comm_address(s)
        assert shared.startswith("wss://127.0.0.1:")
        async with Worker(shared, security=SECURITY) as worker:  # registers through the dashboard
            info = await compute(shared, SECURITY)
            assert list(info["workers"]) == [worker.address]
            assert info["address"] == s.address
            # the dashboard's port asks for the cluster's CA like the scheduler's own:
            # no certificate, another CA, or plain ws:// are refused there too
            no_certificate = Security(tls_ca_file=SECURITY.tls_ca_file)
            with pytest.raises(WebSocketHandshakeError, match="refuses the client's certificate"):
                await Client(shared, security=no_certificate, asynchronous=True, timeout=5)
            with pytest.raises(OSError, match="certificate"):  # we refuse the server's
                await Client(shared, security=Security.temporary(), asynchronous=True, timeout=5)
            with pytest.raises(WebSocketHandshakeError, match="wss:// listeners close"):
                await Client(shared.replace("wss://", "ws://"), asynchronous=True, timeout=5)
            await compute(s.address, SECURITY)  # both ports serve on


@pytest.mark.anyio
async def test_wrong_scheme_says_which(ws_scheduler: Scheduler) -> None:
    hostport = ws_scheduler.address.removeprefix("ws://")
    with pytest.raises(ProtocolError, match="it speaks HTTP"):
        await Client(f"tcp://{hostport}", asynchronous=True, timeout=5)
    async with Scheduler() as plain:
        with pytest.raises(WebSocketHandshakeError, match=r"without answering the upgrade|not HTTP"):
            await Client(plain.address.replace("tcp://", "ws://"), asynchronous=True, timeout=5)
    async with Client(ws_scheduler.address, asynchronous=True) as client:  # it serves on
        assert (await client.scheduler_info())["address"] == ws_scheduler.address


# ------------------------------------------------- a standard websocket client
def framed(msg: Any) -> bytes:
    frames = dumps(msg)
    return frame_prefix(frames) + b"".join(bytes(f) for f in frames)


async def exchange(url: str, **kwargs: Any) -> list[Any]:
    """Speak trioclust's protocol through trio-websocket: handshake, then a request."""
    from trioclust.protocol import loads

    reader = FrameReader()
    messages: list[Any] = []
    async with open_websocket_url(url, **kwargs) as ws:
        await ws.send_message(framed({"op": "handshake", "protocol": PROTOCOL_VERSION, "role": "client", "name": "std"}))
        await ws.send_message(framed([{"op": "scheduler-info", "id": 1}]))
        with trio.fail_after(10):
            while len(messages) < 2:
                reader.feed(await ws.get_message())
                while (frames := reader.next_message()) is not None:
                    messages.append(loads(frames))
    return messages


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_standard_websocket_client_speaks_to_both_ports(ws_scheduler: Scheduler) -> None:
    for url in (ws_scheduler.address + "/", comm_address(ws_scheduler)):
        hello, batch = await exchange(url)
        assert hello["op"] == "handshake"
        assert hello["role"] == "scheduler"
        (reply,) = batch
        assert reply["op"] == "reply"
        assert reply["id"] == 1
        assert reply["status"] == "OK"
        assert reply["result"]["address"] == ws_scheduler.address


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.anyio
async def test_standard_websocket_client_over_wss() -> None:
    async with Scheduler(protocol="wss", security=SECURITY) as s:
        context = SECURITY.client_context("client")
        hello, _ = await exchange(s.address + "/", ssl_context=context)
        assert hello["role"] == "scheduler"


@pytest.mark.slow
def test_local_cluster_over_wss_with_worker_processes() -> None:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, protocol="wss", security=True, dashboard_address=None
    ) as cluster:
        assert cluster.scheduler_address.startswith("wss://")
        with Client(cluster) as client:
            assert client.submit(lambda: 1 + 1).result() == 2
            assert all(a.startswith("wss://") for a in client.scheduler_info()["workers"])
