"""The asynchronous Client against in-process servers, under trio and asyncio."""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator

import anyio
import pytest

from trioclust import (
    CancelledError,
    Client,
    Future,
    Scheduler,
    Worker,
    as_completed,
    wait,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def c() -> AsyncIterator[tuple[Client, Scheduler]]:
    async with Scheduler() as s, Worker(s.address, nthreads=2) as _a, Worker(s.address) as _b:
        async with Client(s.address, asynchronous=True) as client:
            yield client, s


def inc(x: int) -> int:
    return x + 1


class Boom(ValueError):
    pass


def fail(msg: str) -> None:
    raise Boom(msg)


async def test_quickstart_program_prints_two(capsys: pytest.CaptureFixture[str]) -> None:
    async with Scheduler() as scheduler:
        async with Worker(scheduler.address) as worker:
            async with Client(scheduler.address, asynchronous=True) as client:
                print(await client.submit(lambda: 1 + 1))
    assert capsys.readouterr().out == "2\n"
    assert worker.status == "closed"


async def test_submit_map_gather(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    future = client.submit(inc, 1)
    assert isinstance(future, Future)
    assert await future == 2
    assert await future.result() == 2
    futures = client.map(inc, range(100))
    assert await client.gather(futures) == list(range(1, 101))
    total = client.submit(sum, futures)
    assert await total == sum(range(1, 101))


async def test_a_large_map_goes_in_chunks_and_computes_right(c: tuple[Client, Scheduler]) -> None:
    from trioclust.client.graph_messages import GRAPH_CHUNK

    client, _ = c
    base = client.submit(inc, 0)
    n = 2 * GRAPH_CHUNK + 500  # three update-graph messages
    futures = client.map(operator.add, range(n), [base] * n)
    assert await client.gather(futures) == [i + 1 for i in range(n)]


class _Probe:
    """Pickles as ``int(i)``; the one at ``watch`` notes what the link has queued then."""

    def __init__(self, i: int, watch: int, client: Client, seen: list[int]) -> None:
        self.i, self.watch, self.client, self.seen = i, watch, client, seen

    def __reduce__(self) -> tuple[type[int], tuple[int]]:
        if self.i == self.watch:
            stats = self.client._core._link.statistics()  # type: ignore[union-attr]
            self.seen.append(stats.queued + stats.messages_sent)
        return int, (self.i,)


async def test_a_map_sends_each_chunk_before_building_the_next(
    c: tuple[Client, Scheduler],
) -> None:
    from trioclust.client.graph_messages import GRAPH_CHUNK

    client, _ = c
    stats = client._core._link.statistics()  # type: ignore[union-attr]
    before = stats.queued + stats.messages_sent
    seen: list[int] = []
    n = GRAPH_CHUNK + 10
    futures = client.map(inc, [_Probe(i, GRAPH_CHUNK, client, seen) for i in range(n)], pure=False)
    assert seen == [before + 1], "the first 1,000 tasks were not on their way"
    assert await client.gather(futures) == [i + 1 for i in range(n)]


async def test_a_map_that_fails_midway_leaves_nothing_behind(
    c: tuple[Client, Scheduler],
) -> None:
    import threading

    from trioclust.client.graph_messages import GRAPH_CHUNK

    client, s = c
    args: list[object] = list(range(GRAPH_CHUNK + 10))
    args[GRAPH_CHUNK + 5] = threading.Lock()  # cannot be pickled: after the first chunk left
    with pytest.raises(TypeError, match="pickle"):
        client.map(inc, args, pure=False)
    await client.scheduler_info()  # a request: the first chunk's releases go with it
    assert s.state.tasks == {}
    assert await client.submit(inc, 1) == 2


def test_graph_messages_keep_order_and_wanted_keys() -> None:
    from trioclust.client.graph_messages import GRAPH_CHUNK, _graph_messages

    tasks = [(f"k{i}", [], [], i) for i in range(GRAPH_CHUNK + 1)]
    messages = _graph_messages(tasks, ["old", *(f"k{i}" for i in range(0, GRAPH_CHUNK + 1, 2))])  # type: ignore[arg-type]
    assert [len(m["tasks"]) for m in messages] == [GRAPH_CHUNK, 1]
    assert [t[0] for m in messages for t in m["tasks"]] == [t[0] for t in tasks]
    assert messages[0]["wanted"] == [f"k{i}" for i in range(0, GRAPH_CHUNK, 2)]
    assert messages[1]["wanted"] == [f"k{GRAPH_CHUNK}", "old"]


async def test_pure_keys_are_deterministic_and_impure_unique(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    assert client.submit(inc, 1).key == client.submit(inc, 1).key
    assert client.submit(inc, 1).key != client.submit(inc, 2).key
    assert client.submit(inc, 1, pure=False).key != client.submit(inc, 1, pure=False).key
    assert client.submit(inc, 1, key="mine").key == "mine"
    assert client.submit(inc, 1).key.startswith("inc-")


async def test_nested_futures_become_dependencies(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    a, b = client.submit(inc, 1), client.submit(inc, 2)

    def combine(pair: tuple[int, int], mapping: dict[str, list[int]]) -> int:
        return pair[0] + pair[1] + sum(mapping["xs"])

    total = client.submit(combine, (a, b), {"xs": [a, b, 10]})
    assert await total == 2 + 3 + 2 + 3 + 10
    assert await client.gather({"a": a, "rest": [b, (a,)]}) == {"a": 2, "rest": [3, (2,)]}


async def test_task_error_reraises_same_type_with_remote_traceback(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    future = client.submit(fail, "bad input")
    with pytest.raises(Boom, match="bad input") as info:
        await future
    assert any(entry.name == "fail" for entry in info.traceback)
    assert future.status == "error"
    exc = await future.exception()
    assert isinstance(exc, Boom)
    tb = await future.traceback()
    assert tb is not None
    # dependents fail with the same error; the cluster carries on
    dependent = client.submit(inc, future)
    with pytest.raises(Boom):
        await dependent
    assert await client.submit(inc, 41) == 42


async def test_scatter(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    [x, y] = await client.scatter([10, 20])
    assert await client.submit(operator.add, x, y) == 30
    single = await client.scatter(5)
    assert await single == 5
    named = await client.scatter({"k1": 1})
    assert named["k1"].key == "k1"
    assert await client.gather(named) == {"k1": 1}


async def test_large_result_fetched_from_worker(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    future = client.submit(bytes, 1_000_000)
    assert len(await future) == 1_000_000
    doubled = client.submit(lambda b: len(b) * 2, future)
    assert await doubled == 2_000_000


async def test_coroutine_tasks_run_on_the_worker_loop(c: tuple[Client, Scheduler]) -> None:
    client, _ = c

    async def add_later(x: int) -> int:
        import trio

        await trio.lowlevel.checkpoint()
        return x + 100

    assert await client.submit(add_later, 1) == 101


async def test_wait_and_as_completed(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    futures = client.map(inc, range(10))
    done, not_done = await wait(futures)
    assert len(done) == 10
    assert not not_done
    seen = [f async for f in as_completed(client.map(inc, range(20, 30)))]
    assert sorted([await f for f in seen]) == list(range(21, 31))
    pairs = [p async for p in as_completed(client.map(inc, range(3)), with_results=True)]
    assert sorted(r for _, r in pairs) == [1, 2, 3]


async def test_done_callbacks(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    seen: list[str] = []
    called = anyio.Event()
    future = client.submit(inc, 5)

    def callback(f: Future) -> None:
        seen.append(f.status)
        called.set()

    future.add_done_callback(callback)
    await called.wait()
    assert seen == ["finished"]
    future.add_done_callback(lambda f: seen.append("again"))
    assert seen == ["finished", "again"]


async def test_cancel(c: tuple[Client, Scheduler]) -> None:
    client, s = c
    event_key = "never"

    async def forever() -> None:
        import trio

        await trio.sleep_forever()

    future = client.submit(forever, key=event_key)
    await future.cancel()
    assert future.cancelled()
    with pytest.raises(CancelledError):
        await future
    # the scheduler handles messages in order: once it answered a later
    # request, it has handled the release too
    await client.scheduler_info()
    assert event_key not in s.state.tasks


async def test_dropped_future_is_released(c: tuple[Client, Scheduler]) -> None:
    client, s = c
    future = client.submit(inc, 10)
    assert await future == 11
    key = future.key
    assert key in s.state.tasks
    del future
    await client.scheduler_info()  # sent after the release, answered after it
    assert key not in s.state.tasks


async def test_run_and_run_on_scheduler(c: tuple[Client, Scheduler]) -> None:
    client, s = c
    import os

    pids = await client.run(os.getpid)
    assert len(pids) == 2
    assert await client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.address) == s.address
    with pytest.raises(ZeroDivisionError):
        await client.run_on_scheduler(lambda: 1 / 0)
    info = await client.scheduler_info()
    assert info["address"] == s.address
    assert sum(w["nthreads"] for w in info["workers"].values()) == 3


async def test_result_timeout(c: tuple[Client, Scheduler]) -> None:
    client, _ = c

    async def forever() -> None:
        import trio

        await trio.sleep_forever()

    future = client.submit(forever)
    with pytest.raises(TimeoutError):
        await future.result(timeout=0.05)
    assert "pending" in repr(future)
    await future.cancel()


async def test_reprs(c: tuple[Client, Scheduler]) -> None:
    client, _ = c
    future = client.submit(inc, 1)
    await future
    assert repr(future) == f"<Future: finished, type: int, key: {future.key}>"
    assert repr(client).startswith("<Client:")
    assert client.scheduler_address in repr(client)


async def test_unreachable_scheduler_raises_clear_error() -> None:
    with anyio.fail_after(10):
        with pytest.raises(OSError, match=r"127\.0\.0\.1:1"):
            await Client("tcp://127.0.0.1:1", asynchronous=True, timeout=0.5)


async def test_malformed_address_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"tcp://:::nonsense"):
        Client("tcp://:::nonsense", asynchronous=True)


def test_impure_key_suffixes_are_unique_and_differ_in_a_forked_child() -> None:
    import os
    import warnings

    from trioclust.client.keys import unique_suffix

    drawn = {unique_suffix() for _ in range(10_000)}
    assert len(drawn) == 10_000
    assert all(len(s) == 32 and int(s, 16) >= 0 for s in drawn)
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about fork with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child draws what the parent would draw next, unless reseeded
        os.write(write, unique_suffix().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != unique_suffix()
