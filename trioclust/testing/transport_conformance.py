"""The conformance suite every transport backend must pass.

Each check is a plain async function that takes an address to listen on
(``"tcp://127.0.0.1:0"``, ``"inproc://"``) and raises ``AssertionError`` (or
the unexpected exception) when the backend misbehaves. The checks are
backend-neutral: they run under whichever anyio backend is current, so a test
module runs them under trio and asyncio alike::

    @pytest.mark.anyio
    async def test_my_scheme():
        await run_conformance_suite("myscheme://127.0.0.1:0")

They exercise the backend through :class:`~trioclust.comm.Comm`, because what
matters is what the layers above see: whole messages, and a clear
:class:`~trioclust.errors.CommClosedError` whenever a connection ends.

Each takes ``security=``, the :class:`~trioclust.Security` both ends use
(``tls://`` and ``wss://`` need one): the listening end as the scheduler, the
connecting end as a client.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream

from trioclust import transport
from trioclust.comm import Comm
from trioclust.errors import CommClosedError, ConnectTimeout
from trioclust.protocol import Serialized, dumps, frame_prefix, serialize

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = [
    "check_abort_mid_message",
    "check_close_from_either_side",
    "check_connect_refused",
    "check_large_message",
    "check_small_messages",
    "comm_pair",
    "run_conformance_suite",
    "stream_pair",
]

# generous bound on any single step of a check; a hang fails instead of blocking
_STEP_TIMEOUT = 30.0


@asynccontextmanager
async def stream_pair(
    address: str, *, security: Security | None = None
) -> AsyncIterator[tuple[ByteStream, ByteStream]]:
    """Listen on ``address``, connect to it, and yield ``(client, server)`` streams.

    Both streams and the listener are closed on exit.
    """
    listener = await transport.listen(address, security=security)
    accepted: list[ByteStream] = []
    arrived = anyio.Event()
    finished = anyio.Event()

    async def handler(stream: ByteStream) -> None:
        accepted.append(stream)
        arrived.set()
        await finished.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        try:
            with anyio.fail_after(_STEP_TIMEOUT):
                client = await transport.connect(
                    listener.contact_address, timeout=_STEP_TIMEOUT, security=security
                )
            try:
                with anyio.fail_after(_STEP_TIMEOUT):
                    await arrived.wait()
                yield client, accepted[0]
            finally:
                await anyio.aclose_forcefully(client)
        finally:
            finished.set()
            with anyio.CancelScope(shield=True):
                await listener.aclose()


@asynccontextmanager
async def comm_pair(
    address: str, *, security: Security | None = None
) -> AsyncIterator[tuple[Comm, Comm]]:
    """Like :func:`stream_pair`, wrapped as ``(client, server)`` comms (no handshake)."""
    async with stream_pair(address, security=security) as (client, server):
        a, b = Comm(client), Comm(server)
        try:
            yield a, b
        finally:
            await a.aclose()
            await b.aclose()


async def _raises(
    exc_type: type[BaseException], fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
) -> BaseException:
    """The exception ``await fn(*args, **kwargs)`` raises; ``AssertionError`` if none."""
    try:
        result = await fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError(f"{fn!r} returned {result!r} instead of raising {exc_type.__name__}")


async def _exchange(sender: Comm, receiver: Comm, msg: Any) -> Any:
    """Send ``msg`` and receive it concurrently (a large one cannot sit in buffers)."""
    received: list[Any] = []

    async def receive() -> None:
        received.append(await receiver.recv())

    with anyio.fail_after(_STEP_TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await sender.send(msg)
    return received[0]


async def check_small_messages(address: str, *, security: Security | None = None) -> None:
    """Messages both ways arrive whole, in order; a 1 MiB frame too."""
    async with comm_pair(address, security=security) as (a, b):
        for i in range(3):
            msg = {"op": "ping", "i": i, "nested": {"list": [1, 2.5, None, True, "x" * i]}}
            assert await _exchange(a, b, msg) == msg
            assert await _exchange(b, a, [msg, msg]) == [msg, msg]
        for i in range(20):  # a burst, read back afterwards
            await a.send({"i": i})
        with anyio.fail_after(_STEP_TIMEOUT):
            assert [(await b.recv())["i"] for _ in range(20)] == list(range(20))
        blob = bytes(range(256)) * 4096
        got = await _exchange(b, a, {"blob": blob, "after": "tail"})
        assert bytes(got["blob"]) == blob, "a 1 MiB out-of-band frame was corrupted"
        assert got["after"] == "tail"


async def check_large_message(
    address: str, nbytes: int = 200_000_000, *, security: Security | None = None
) -> None:
    """A message of ``nbytes`` (a numpy array, out of band) arrives intact."""
    np: Any
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a test dependency
        np = None
    n = nbytes // 8
    value: Any = np.arange(n, dtype="float64") if np is not None else bytes(nbytes)
    async with comm_pair(address, security=security) as (a, b):
        got = await _exchange(a, b, {"op": "big", "data": serialize(value)})
        assert isinstance(got["data"], Serialized)
        assert got["data"].nbytes >= nbytes
        result = got["data"].deserialize()
        if np is None:  # pragma: no cover
            assert result == value
            return
        assert result.shape == (n,)
        assert result.dtype == value.dtype
        sample = np.linspace(0, n - 1, 10_001).astype("int64")
        assert np.array_equal(result[sample], sample.astype("float64")), "sampled values differ"
        assert np.array_equal(result[-4096:], value[-4096:]), "the tail differs"
        chunk = min(n, 1_000_000)
        assert math.isclose(float(result[:chunk].sum()), chunk * (chunk - 1) / 2)


async def check_close_from_either_side(
    address: str, *, security: Security | None = None
) -> None:
    """Closing one end gives the other a :class:`CommClosedError` naming the peer."""
    for closer_is_client in (True, False):
        async with comm_pair(address, security=security) as (a, b):
            closer, other = (a, b) if closer_is_client else (b, a)
            await closer.send({"op": "last"})
            await closer.aclose()
            with anyio.fail_after(_STEP_TIMEOUT):
                assert await other.recv() == {"op": "last"}, "data sent before close was lost"
                exc = await _raises(CommClosedError, other.recv)
            assert other.peer_address in str(exc), f"no peer address in {exc}"
            assert "closed" in str(exc)
            assert other.closed
            await _raises(CommClosedError, closer.send, {"op": "after"})


async def check_abort_mid_message(address: str, *, security: Security | None = None) -> None:
    """A peer that dies mid-message causes a :class:`CommClosedError`, no hang, no partial message."""
    async with stream_pair(address, security=security) as (client, server):
        receiver = Comm(server)
        try:
            frames = dumps({"op": "whole", "payload": b"x" * 100_000})
            data = frame_prefix(frames) + b"".join(bytes(f) for f in frames)
            await client.send(data)
            await client.send(data[: len(data) // 2])  # half a message, then gone
            await client.aclose()
            with anyio.fail_after(_STEP_TIMEOUT):
                first = await receiver.recv()
                exc = await _raises(CommClosedError, receiver.recv)
            assert first["op"] == "whole"
            assert len(first["payload"]) == 100_000
            assert "middle of a message" in str(exc), str(exc)
        finally:
            await receiver.aclose()


async def check_connect_refused(
    address: str, timeout: float = 0.5, *, security: Security | None = None
) -> None:
    """Connecting where nothing listens raises the timeout ``OSError`` in about ``timeout``."""
    listener = await transport.listen(address, security=security)
    contact = listener.contact_address
    await listener.aclose()
    start = anyio.current_time()
    with anyio.fail_after(timeout + _STEP_TIMEOUT):
        exc = await _raises(OSError, transport.connect, contact, timeout=timeout, security=security)
    elapsed = anyio.current_time() - start
    assert isinstance(exc, ConnectTimeout), repr(exc)
    assert isinstance(exc, TimeoutError)
    assert contact in str(exc), str(exc)
    assert elapsed < timeout + 2.0, f"took {elapsed:.2f} s for a {timeout} s timeout"


async def run_conformance_suite(
    address: str, *, large: bool = True, security: Security | None = None
) -> None:
    """Every check, one after the other (the 200 MB one only when ``large``)."""
    await check_small_messages(address, security=security)
    await check_close_from_either_side(address, security=security)
    await check_abort_mid_message(address, security=security)
    await check_connect_refused(address, security=security)
    if large:
        await check_large_message(address, security=security)
