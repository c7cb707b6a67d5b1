"""``ucx://``: the conformance suite, stream behaviour, and a cluster over UCX.

These tests need ``ucxx`` (``pip install -e '.[ucx]'``); without it they are
skipped, except the ones about what happens without it. On a machine without
a GPU, UCX must not look for CUDA transports: the module sets
``UCX_TLS=tcp,self,sm`` unless the environment already chose.

The UCX runtime (a loop thread, ucxx's notifier thread and the UCX worker's
sockets) lives from its first use to the end of the process; see the theory
of operation in :mod:`trioclust.transport.ucx`. The module-scoped fixture
starts it before the first test, so the leak check of every test finds it
already there, and still checks that a test leaves nothing else behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import anyio
import anyio.abc
import pytest

from trioclust import Client, Scheduler, Worker, transport
from trioclust.testing import transport_conformance as suite
from trioclust.transport import ucx

os.environ.setdefault("UCX_TLS", "tcp,self,sm")

ADDRESS = "ucx://127.0.0.1:0"
STEP = 30  # seconds any single wait may take before it is a failure

needs_ucxx = pytest.mark.skipif(
    not ucx.ucx_available(), reason="ucxx is not installed (pip install -e '.[ucx]')"
)


@pytest.fixture(scope="module", autouse=True)
def ucx_runtime() -> None:
    """Start the process's UCX runtime before the first test's leak check."""
    if ucx.ucx_available():
        anyio.run(ucx.start_ucx)


# ------------------------------------------------------------ conformance


@needs_ucxx
@pytest.mark.anyio
async def test_small_messages() -> None:
    await suite.check_small_messages(ADDRESS)


@needs_ucxx
@pytest.mark.anyio
async def test_close_from_either_side() -> None:
    await suite.check_close_from_either_side(ADDRESS)


@needs_ucxx
@pytest.mark.anyio
async def test_abort_mid_message() -> None:
    await suite.check_abort_mid_message(ADDRESS)


@needs_ucxx
@pytest.mark.anyio
async def test_connect_refused() -> None:
    await suite.check_connect_refused(ADDRESS, timeout=0.5)


@needs_ucxx
@pytest.mark.slow
@pytest.mark.anyio
async def test_200_mb_message() -> None:
    await suite.check_large_message(ADDRESS, nbytes=200_000_000)


# ------------------------------------------------------------ the streams


@needs_ucxx
@pytest.mark.anyio
async def test_addresses_and_eof() -> None:
    async with suite.stream_pair(ADDRESS) as (client, server):
        contact = client.extra(transport.TransportAttribute.peer_address)
        assert contact.startswith("ucx://127.0.0.1:")
        assert not contact.endswith(":0")
        assert server.extra(transport.TransportAttribute.local_address) == contact
        # UCX reports no local port: the client's side is its address with port 0
        assert client.extra(transport.TransportAttribute.local_address) == "ucx://127.0.0.1:0"
        assert server.extra(transport.TransportAttribute.peer_address) == "ucx://127.0.0.1:0"
        with anyio.fail_after(STEP):
            await client.send(b"last words")
            await client.send_eof()
            assert await server.receive() == b"last words"
            with pytest.raises(anyio.EndOfStream):
                await server.receive()
            # the other direction still works after a half close
            await server.send(b"reply")
            assert await client.receive() == b"reply"


@needs_ucxx
@pytest.mark.anyio
async def test_receive_is_safe_to_cancel_and_respects_max_bytes() -> None:
    async with suite.stream_pair(ADDRESS) as (client, server):
        with anyio.move_on_after(0.05):
            await server.receive()  # nothing sent yet: cancelled
        with anyio.fail_after(STEP):
            await client.send(b"x" * 100_000)
            got = b""
            while len(got) < 100_000:
                chunk = await server.receive(30_000)
                assert 0 < len(chunk) <= 30_000
                got += chunk
        assert got == b"x" * 100_000


@needs_ucxx
@pytest.mark.anyio
async def test_closed_stream_raises_closed_and_peer_sees_broken_or_eof() -> None:
    async with suite.stream_pair(ADDRESS) as (client, server):
        received: list[BaseException] = []

        async def receive_until_closed() -> None:
            try:
                await client.receive()
            except anyio.ClosedResourceError as exc:
                received.append(exc)

        with anyio.fail_after(STEP):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive_until_closed)
                await anyio.wait_all_tasks_blocked()
                await client.aclose()
        assert len(received) == 1, "closing did not wake our own receiver"
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"after close")
        with pytest.raises(anyio.ClosedResourceError):
            await client.receive()
        with anyio.fail_after(STEP):
            with pytest.raises(anyio.EndOfStream):
                await server.receive()
            # the peer is gone: sending fails (the first sends may still leave, as with TCP)
            assert await _sends_until_broken(server) < 10_000


async def _sends_until_broken(stream: anyio.abc.ByteStream) -> int:
    """How many sends succeed before one raises ``BrokenResourceError``."""
    for sent in range(10_000):
        try:
            await stream.send(b"into the void")
        except anyio.BrokenResourceError:
            return sent
    return 10_000


@needs_ucxx
@pytest.mark.anyio
async def test_listening_on_a_port_in_use_is_an_oserror() -> None:
    listener = await transport.listen(ADDRESS)
    try:
        with pytest.raises(OSError, match="cannot listen"):
            await transport.listen(listener.contact_address)
    finally:
        await listener.aclose()


def test_without_ucxx_the_scheme_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ucx, "ucx_available", lambda: False)
    assert "ucx" in transport.registered_schemes()
    assert transport.normalize_address("ucx://localhost:8786") == "ucx://localhost:8786"
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'trioclust\[ucx\]'"):
        anyio.run(transport.listen, "ucx://127.0.0.1:0")


def test_importing_trioclust_does_not_import_ucxx() -> None:
    code = "import sys, trioclust, trioclust.transport; sys.exit('ucxx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=STEP).returncode == 0


# ---------------------------------------------------------------- cluster


def make_block(seed: int) -> bytes:
    return bytes([seed % 256]) * 3_000_000


def combine(a: bytes, b: bytes) -> int:
    return sum(a[:10]) + sum(b[:10]) + len(a) + len(b)


def inc(x: int) -> int:
    return x + 1


def make_cupy(n: int) -> Any:
    import cupy

    return cupy.arange(n, dtype=cupy.float64)


def cupy_sum(a: Any, b: Any) -> float:
    return float((a + b).sum())


def _cuda_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # no driver, no device
        return False


@needs_ucxx
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])  # the servers run on trio
async def test_cluster_over_ucx() -> None:
    """A scheduler, two workers and a client, all over UCX; a dependency crosses workers."""
    with anyio.fail_after(60):
        async with (
            Scheduler(address=ADDRESS) as s,
            Worker(s.address) as w1,
            Worker(s.address) as w2,
            Client(s.address, asynchronous=True) as client,
        ):
            assert s.address.startswith("ucx://")
            assert w1.address.startswith("ucx://")
            assert w2.address.startswith("ucx://")
            assert await client.submit(inc, 1) == 2
            assert await client.gather(client.map(inc, range(20))) == list(range(1, 21))
            # two blocks made on different workers, combined on one of them: the
            # other block travels worker to worker
            a = client.submit(make_block, 1, pure=False)
            b = client.submit(make_block, 2, pure=False)
            await client.gather([a, b])
            holders = {k: set(s.state.tasks[k].who_has) for k in (a.key, b.key)}
            assert holders[a.key] != holders[b.key], f"both blocks on one worker: {holders}"
            assert await client.submit(combine, a, b) == 10 + 20 + 6_000_000


@needs_ucxx
@pytest.mark.skipif(not _cuda_available(), reason="needs CuPy and a GPU")
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_cupy_arrays_cross_workers_over_ucx() -> None:
    """CuPy arrays made on two workers, added on one: one array travels over UCX."""
    n = 4_000_000  # 32 MB each
    with anyio.fail_after(120):
        async with (
            Scheduler(address=ADDRESS) as s,
            Worker(s.address) as _w1,
            Worker(s.address) as _w2,
            Client(s.address, asynchronous=True) as client,
        ):
            a = client.submit(make_cupy, n, pure=False)
            b = client.submit(make_cupy, n, pure=False)
            await client.gather([a, b])
            holders = {k: set(s.state.tasks[k].who_has) for k in (a.key, b.key)}
            assert holders[a.key] != holders[b.key], f"both arrays on one worker: {holders}"
            assert await client.submit(cupy_sum, a, b) == float(n * (n - 1))


@needs_ucxx
@pytest.mark.slow
def test_scheduler_and_worker_over_ucx_from_the_command_line() -> None:
    from test_cli import run_scheduler_and_worker  # the command-line tests' own check

    run_scheduler_and_worker("ucx", ["--protocol", "ucx"], [])
