"""progress(): bars per key prefix in a real pseudo-terminal, in a stream, under
an asynchronous client, and (where ipywidgets is installed) as notebook widgets.

The usage is Dask's docs/source/examples/word-count.rst: ``progress(futures)``.
"""

from __future__ import annotations

import fcntl
import importlib.util
import io
import os
import re
import struct
import sys
import termios
import textwrap

import pytest
import trio

from trioclust import Client, Scheduler, Worker, progress

SCRIPT = textwrap.dedent(
    """
    from trioclust import Client, LocalCluster, progress

    def inc(x):
        return x + 1

    def fail(x):
        raise ValueError(x)

    with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            futures = client.map(inc, range(200))
            total = client.submit(sum, futures)
            bad = client.submit(fail, 1)
            progress(futures, total, bad)
            assert all(f.done() for f in [*futures, total, bad])
            print("ALL DONE", total.result())
    """
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def inc(x: int) -> int:
    return x + 1


@pytest.mark.trio
@pytest.mark.slow
async def test_progress_bars_in_a_pseudo_terminal() -> None:
    main, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # 30 rows, 100 columns
    try:
        env = {**os.environ, "COLUMNS": "100", "LINES": "30", "TERM": "xterm"}
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", SCRIPT], stdin=child, stdout=child, stderr=child, env=env,
        )
    finally:
        os.close(child)
    output = bytearray()
    async with trio.lowlevel.FdStream(main) as stream:
        with trio.fail_after(60):
            while True:
                try:
                    chunk = await stream.receive_some()
                except trio.BrokenResourceError:  # EIO: the terminal's other end closed
                    break
                if not chunk:
                    break
                output += chunk
            code = await proc.wait()
    text = ANSI.sub("", output.decode(errors="replace"))
    assert code == 0, text
    assert "ALL DONE 20100" in text
    # one bar per prefix, each run to its end; the failure is counted on its bar
    assert re.search(r"inc\s*: 100%\|[^|]*\| 200/200", text), text
    assert re.search(r"sum\s*: 100%\|[^|]*\| 1/1", text), text
    assert re.search(r"fail\s*: 100%\|[^|]*\| 1/1 .*erred=1", text), text
    # drawn in place: carriage returns, and the bars were shown before the end
    assert "\r" in text
    assert re.search(r"inc\s*:\s+\d+%", text)


@pytest.mark.trio
async def test_progress_in_a_stream_counts_only_remaining_when_asked() -> None:
    async with Scheduler() as s, Worker(s.address, nthreads=2):
        async with Client(s.address, asynchronous=True) as client:
            first = client.map(inc, range(5))
            await client.gather(first)
            more = client.map(inc, range(100, 110))
            out = io.StringIO()
            await progress(first, more, complete=False, multi=False, file=out)
            assert all(f.done() for f in more)
            lines = out.getvalue()
            assert re.search(r"all: 100%\|[^|]*\| 10/10", lines), lines
            out = io.StringIO()
            await progress(first, more, file=out)
            assert re.search(r"inc: 100%\|[^|]*\| 15/15", out.getvalue()), out.getvalue()


@pytest.mark.trio
@pytest.mark.skipif(importlib.util.find_spec("dask") is None, reason="needs dask (the dask extra)")
async def test_progress_follows_a_persisted_collection() -> None:
    """README's tour: ``y = x.persist(); progress(y)`` (a dask array)."""
    import dask.array as da

    async with Scheduler() as s, Worker(s.address, nthreads=2):
        async with Client(s.address, asynchronous=True, set_as_default=False) as client:
            x = client.persist(da.ones((40, 40), chunks=(10, 10)) + 1)
            out = io.StringIO()
            await progress(x, file=out)
            assert re.search(r": 100%\|[^|]*\| 16/16", out.getvalue()), out.getvalue()
            assert float(await client.compute(x.sum())) == 3200.0


def test_progress_refuses_what_is_not_a_future() -> None:
    with pytest.raises(TypeError, match="expects futures"):
        progress(42)


@pytest.mark.trio
@pytest.mark.skipif(
    importlib.util.find_spec("ipywidgets") is None,
    reason="ipywidgets is not installed: progress() has no notebook view to test",
)
async def test_progress_in_jupyter_widgets() -> None:
    async with Scheduler() as s, Worker(s.address):
        async with Client(s.address, asynchronous=True) as client:
            futures = client.map(inc, range(20))
            bars = progress(futures, notebook=True)
            await client.gather(futures)
            assert set(bars) == {"inc"}
            assert bars["inc"].n == 20
