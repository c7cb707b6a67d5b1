"""Scheduler and Worker servers: bad input, lost peers, closing, under trio."""

from __future__ import annotations

import logging
import os
import struct
import time
from typing import Any

import pytest
import trio
import trio.testing

from trioclust import Client, Scheduler, Worker, config
from trioclust.protocol import PROTOCOL_VERSION
from trioclust.protocol.codec import dumps
from trioclust.protocol.framing import frame_prefix
from trioclust.transport.addresses import parse_address, parse_host_port

pytestmark = pytest.mark.trio


def inc(x: int) -> int:
    return x + 1


async def _open_raw(address: str) -> trio.SocketStream:
    host, port = parse_host_port(parse_address(address)[1])
    return await trio.open_tcp_stream(host, port)


def _message(msg: object) -> bytes:
    frames = dumps(msg)
    return frame_prefix(frames) + b"".join(bytes(f) for f in frames)


async def _expect_closed_by_peer(stream: trio.SocketStream) -> None:
    with trio.fail_after(5):
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:
                return
            if not data:
                return


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(os.urandom(4096), id="random-bytes"),
        pytest.param(struct.pack("<QQ", 1, 2**50), id="petabyte-frame"),
        pytest.param(
            _message({"op": "handshake", "protocol": PROTOCOL_VERSION + 1, "role": "client", "name": "x"}),
            id="wrong-protocol-version",
        ),
        pytest.param(
            _message({"op": "handshake", "protocol": PROTOCOL_VERSION, "role": "client", "name": "x"})
            + struct.pack("<QQ", 1, 1000) + b"partial",
            id="cut-mid-message",
        ),
    ],
)
async def test_bad_input_closes_only_that_connection(
    payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioclust")
    async with Scheduler() as s, Worker(s.address) as w:
        async with Client(s.address, asynchronous=True) as client:
            assert await client.submit(inc, 1) == 2
            for target in (s.address, w.address):
                stream = await _open_raw(target)
                await stream.send_all(payload)
                if payload.endswith(b"partial"):
                    await stream.aclose()  # the connection is cut mid-message
                else:
                    await _expect_closed_by_peer(stream)
                    await stream.aclose()
            # everyone already connected is still served
            assert await client.submit(inc, 2) == 3
            assert len(s.state.workers) == 1
    assert any(r.levelno >= logging.WARNING and "trioclust" in r.name for r in caplog.records)


async def test_closing_servers_that_never_served_returns_at_once() -> None:
    for server in (Scheduler(), Worker("tcp://127.0.0.1:1")):
        with trio.fail_after(10):  # it used to wait forever for a serve() that never ran
            await server.close()
        assert server.status == "closed"
        await server.wait_closed()


async def test_worker_gives_up_on_a_lost_scheduler_with_a_reason() -> None:
    with config.set(**{"comm.timeouts.connect": 0.2}):
        s = Scheduler()
        async with trio.open_nursery() as nursery:
            await nursery.start(s.serve)
            worker = Worker(s.address, reconnect_timeout=0.3, heartbeat_interval=0.05)
            await nursery.start(worker.serve)
            await s.close()
            with trio.fail_after(10):
                await worker.wait_closed()
    assert worker.close_reason is not None
    assert "could not reconnect" in worker.close_reason
    assert s.address in worker.close_reason


async def test_worker_reconnects_to_a_scheduler_that_comes_back() -> None:
    first = Scheduler()
    async with trio.open_nursery() as nursery:
        await nursery.start(first.serve)
        address = first.address
        port = parse_host_port(parse_address(address)[1])[1]
        worker = Worker(address, reconnect_timeout=30, heartbeat_interval=0.05)
        await nursery.start(worker.serve)
        await first.close()
        second = Scheduler(port=port)
        await nursery.start(second.serve)
        with trio.fail_after(20):
            await second.wait_for_workers(1)
        async with Client(second.address, asynchronous=True) as client:
            assert await client.submit(inc, 1) == 2
        await worker.close()
        await second.close()


async def test_unreachable_and_malformed_addresses() -> None:
    with pytest.raises(ValueError, match=r"tcp://127\.0\.0\.1:notaport"):
        Worker("tcp://127.0.0.1:notaport")
    with config.set(**{"comm.timeouts.connect": 0.3}):
        with trio.fail_after(10), pytest.raises(OSError, match=r"tcp://127\.0\.0\.1:1"):
            async with Worker("tcp://127.0.0.1:1"):
                pass
        with trio.fail_after(10), pytest.raises(OSError, match="Timed out"):
            await Client("tcp://127.0.0.1:1", asynchronous=True)


# Module-level, so tasks are pickled by reference and the in-process workers
# share these events with the test (a closure would be pickled as a copy).
_events: dict[str, trio.Event] = {}


async def _forever() -> None:
    _events["started"].set()
    await trio.sleep_forever()


async def _wait_for_gate(x: int) -> int:
    _events["started"].set()
    await _events["gate"].wait()
    return x


async def test_closing_cancels_running_coroutine_tasks() -> None:
    _events["started"] = trio.Event()
    async with Scheduler() as s, Worker(s.address) as w:
        async with Client(s.address, asynchronous=True) as client:
            future = client.submit(_forever)
            await _events["started"].wait()
            assert w.state.executing
    assert future.cancelled()
    assert w.status == "closed"


async def test_worker_leaves_during_task_other_worker_finishes_it() -> None:
    """A worker closes while its tasks run: they are rescheduled on the other."""
    _events["started"], _events["gate"] = trio.Event(), trio.Event()
    async with Scheduler() as s, Worker(s.address, name="a") as a, Worker(s.address, name="b"):
        async with Client(s.address, asynchronous=True) as client:
            futures = client.map(_wait_for_gate, range(4))
            await _events["started"].wait()
            await a.close()
            _events["gate"].set()
            assert await client.gather(futures) == [0, 1, 2, 3]


async def test_retiring_a_worker_moves_its_data_first() -> None:
    async with Scheduler() as s, Worker(s.address, name="a") as a, Worker(s.address, name="b") as b:
        async with Client(s.address, asynchronous=True) as client:
            futures = client.map(inc, range(20))
            await client.gather(futures)
            on_a = [k for k in a.data if k in {f.key for f in futures}]
            assert on_a, "placement spreads independent tasks over both workers"
            retired = await client.retire_workers([a.address])
            assert retired == [a.address]
            await a.wait_closed()
            assert a.close_reason == "retired by the scheduler"
            assert set(on_a) <= set(b.data)
            assert all(s.state.tasks[k].who_has == {b.address} for k in on_a)
            assert await client.gather(futures) == list(range(1, 21))
            # nothing was computed again
            assert not any(
                finish == "processing" and stim.startswith("remove-worker")
                for _, _, finish, stim, _ in s.story(*on_a)
            )


async def _until_cancelled() -> None:
    _events["started"].set()
    try:
        await trio.sleep_forever()
    finally:
        _events["cancelled"].set()


async def test_dropping_data_waits_for_the_next_batch_and_a_cancel_does_not() -> None:
    """A free-keys that only drops data rides with the worker link's next batch
    (waking an idle worker for it would take a core from the work in flight);
    one that cancels work leaves at once."""
    _events["started"], _events["cancelled"] = trio.Event(), trio.Event()
    with config.set(**{"comm.lazy-linger": 60.0}):  # outlasts the test: lazy means "with company"
        async with Scheduler() as s, Worker(s.address) as w:
            async with Client(s.address, asynchronous=True) as client:
                x = client.submit(inc, 1)
                assert await x == 2
                key = x.key
                del x
                await client.scheduler_info()  # a request: takes the lazy release along
                assert key not in s.state.tasks
                assert key in w.data, "the data is dropped with the next batch, not alone"
                assert s.worker_links[w.address].statistics().queued == 1
                assert await client.submit(inc, 2) == 3  # its compute-task takes it along
                assert key not in w.data
                future = client.submit(_until_cancelled)
                await _events["started"].wait()
                await client.cancel([future])
                with trio.fail_after(10):
                    await _events["cancelled"].wait()


async def test_a_sync_clients_thread_writes_its_submissions_with_its_releases() -> None:
    """A synchronous client's user thread writes a submission itself when its
    link is idle, with the keys it dropped since in front; a key dropped with
    nothing after it still reaches the scheduler (the loop's watch), and a key
    dropped and submitted again is released before it is wanted again."""
    async with Scheduler() as s, Worker(s.address):

        def work() -> None:
            with Client(s.address) as client:
                link = client._core._link
                assert link is not None
                before = link.statistics().batches_sent
                from_threads = link._thread_sent[1]
                keys = []
                for i in range(20):
                    future = client.submit(inc, i, pure=False)
                    assert future.result(timeout=10) == i + 1
                    keys.append(future.key)
                    del future
                assert link._thread_sent[1] > from_threads, "no submission left from the user's thread"
                assert link.statistics().batches_sent > before
                # each release went with a later submission at the latest
                assert not any(key in s.state.tasks for key in keys[:-1])
                # the last one has nothing after it: the loop sends it
                deadline = time.monotonic() + 10
                while keys[-1] in s.state.tasks:  # a condition, bounded: not a timed sleep
                    assert time.monotonic() < deadline, "a dropped key never reached the scheduler"
                    time.sleep(0.005)
                # dropped, then the same key wanted again: release first, then the want
                for _ in range(5):
                    again = client.submit(inc, 100)  # pure: the same key each time
                    assert again.result(timeout=10) == 101
                    del again
                # a burst: writes from the thread and queued ones mixed, each
                # dependency dropped right after its dependent was submitted
                ys = []
                for i in range(300):
                    x = client.submit(inc, i, pure=False)
                    ys.append(client.submit(inc, x, pure=False))
                    del x
                assert client.gather(ys) == [i + 2 for i in range(300)]

        await trio.to_thread.run_sync(work)


async def test_data_dropped_together_leaves_in_one_free_keys() -> None:
    """Keys a client releases at once reach their worker as one free-keys."""
    with config.set(**{"comm.lazy-linger": 60.0}):  # dropped data rides with the next compute-task
        async with Scheduler() as s, Worker(s.address) as w:
            async with Client(s.address, asynchronous=True) as client:
                futures = client.map(inc, range(20), pure=False)
                assert await client.gather(futures) == list(range(1, 21))
                keys = [f.key for f in futures]
                link = w._scheduler_link
                assert link is not None
                before = link.statistics().messages_received
                del futures
                assert await client.submit(inc, 100) == 101  # takes the release along
                assert not any(k in w.data for k in keys)
                # the compute-task and one free-keys for all 20 (not 20 of them)
                assert link.statistics().messages_received - before == 2


class _SentLog:
    """Stands in for a Link: records what is sent on it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, msg: dict[str, Any], **options: Any) -> None:
        self.sent.append(msg)


def _fake_peers(s: Scheduler, **nthreads: int) -> tuple[_SentLog, dict[str, _SentLog]]:
    """Client "c" and the named workers, as logs of what ``s`` sends them;
    ``s`` holds tasks "k0", "k1", ... wanted by "c" once ``_submit`` ran."""
    from trioclust.core import events as ev

    client, workers = _SentLog(), {address: _SentLog() for address in nthreads}
    s.client_links["c"] = client  # type: ignore[assignment]
    s.worker_links.update(workers)  # type: ignore[arg-type]
    s._handle(
        ev.AddClient(client="c", stimulus_id="add-client"),
        *(ev.AddWorker(address=address, nthreads=n, stimulus_id="add-worker") for address, n in nthreads.items()),
    )
    return client, workers


def _submit(s: Scheduler, n: int) -> list[str]:
    """Tasks "k0".."k<n-1>" without dependencies, submitted and wanted by client "c"."""
    from trioclust.core import events as ev

    keys = [f"k{i}" for i in range(n)]
    new = tuple(ev.NewTask(key=k, run_spec=None, dependencies=(), priority=i) for i, k in enumerate(keys))
    s._handle(ev.UpdateGraph(client="c", tasks=new, wanted=tuple(keys), stimulus_id="update-graph"))
    return keys


async def test_results_of_one_pass_reach_their_client_in_one_message_in_order() -> None:
    from trioclust.core import events as ev
    from trioclust.protocol import serialize

    s = Scheduler()
    client, _ = _fake_peers(s, w=4)
    _submit(s, 4)
    value = serialize(5)

    def done(key: str) -> ev.TaskFinished:
        return ev.TaskFinished(worker="w", key=key, nbytes=8, type_name="int", value=value, stimulus_id="task-finished")

    client.sent.clear()
    s._handle(
        done("k0"), done("k1"),
        ev.TaskErred(worker="w", key="k2", exception=None, exception_text="boom", stimulus_id="task-erred"),
        done("k3"),
    )
    assert [(m["op"], m.get("keys") or m.get("key")) for m in client.sent] == [
        ("keys-in-memory", ["k0", "k1"]), ("task-erred", "k2"), ("keys-in-memory", ["k3"]),
    ]
    assert client.sent[0]["types"] == ["int", "int"]
    assert client.sent[0]["values"] == {"k0": value, "k1": value}


def _report_finished(s: Scheduler, worker: str, key: str, value: object = None) -> None:
    """What a worker's reader does with a task-finished message read in a batch."""
    from trioclust.runtime.scheduler import _WorkerPeer

    peer = _WorkerPeer()
    peer.address = worker
    msg: dict[str, object] = {
        "op": "task-finished", "key": key, "nbytes": 8, "type": "int", "stimulus_id": f"f-{key}"
    }
    if value is not None:
        msg["value"] = value
    s._worker_task_finished(peer, msg)  # type: ignore[arg-type]
    s._reports_received()


def _sent(log: _SentLog) -> list[tuple[str, object]]:
    return [(m["op"], m.get("keys") or m.get("key")) for m in log.sent]


async def test_task_reports_read_in_one_round_are_one_pass_of_the_scheduler() -> None:
    """Batches from several workers that the loop reads at once are handled together,
    after the round's reads; a worker's removal handles its reports first."""
    async with Scheduler() as s:  # serving: its report pass runs
        client, workers = _fake_peers(s, w0=1, w1=1)
        _submit(s, 3)
        where = {m["key"]: w for w, link in workers.items() for m in link.sent}
        assert where["k0"] != where["k1"]  # one on each worker

        client.sent.clear()
        # what two workers' readers do with one batch each in the same round
        _report_finished(s, where["k0"], "k0")  # the round's first: told from the reader
        _report_finished(s, where["k1"], "k1")
        assert _sent(client) == [("keys-in-memory", ["k0"])]
        await trio.testing.wait_all_tasks_blocked()
        assert _sent(client) == [("keys-in-memory", ["k0"]), ("keys-in-memory", ["k1"])]

        # a report gathered before its worker is removed counts: k2 is in memory,
        # not sent to be computed again
        client.sent.clear()
        _report_finished(s, where["k2"], "k2")  # told from the reader; its pass not run yet
        s._remove_worker(where["k2"], "connection lost", expected=False)
        # first k2's result; then the removal loses what that worker held (k2
        # and one of k0, k1), which the client hears of
        assert client.sent[0] == {
            "op": "keys-in-memory", "keys": ["k2"], "types": ["int"], "stimulus_id": "f-k2"
        }
        assert {m["op"] for m in client.sent[1:]} == {"lost-data"}
        s.worker_links.clear()


async def test_a_rounds_first_result_goes_to_its_client_from_the_reader_and_once() -> None:
    """The first task-finished of a round is sent on to its client when it is
    read; the pass that follows tells only the clients not told yet."""
    from trioclust.protocol import serialize

    async with Scheduler() as s:  # serving: its report pass runs
        client, _ = _fake_peers(s, w0=2)
        _submit(s, 2)  # both on w0
        client.sent.clear()
        value = serialize(5)
        _report_finished(s, "w0", "k0", value)
        assert client.sent == [
            {
                "op": "keys-in-memory", "keys": ["k0"], "types": ["int"], "values": {"k0": value},
                "stimulus_id": "f-k0",
            }
        ]
        _report_finished(s, "w0", "k1")
        await trio.testing.wait_all_tasks_blocked()
        assert client.sent[1:] == [
            {"op": "keys-in-memory", "keys": ["k1"], "types": ["int"], "stimulus_id": "f-k1"}
        ]
        assert [s.state.tasks[k].state for k in ("k0", "k1")] == ["memory", "memory"]
        s.worker_links.clear()


async def test_a_lone_result_reaches_its_client_in_one_message() -> None:
    async with Scheduler() as s, Worker(s.address):
        async with Client(s.address, asynchronous=True) as client:
            link = client._core._link
            assert link is not None
            for i in range(3):
                before = link.statistics().messages_received
                assert await client.submit(inc, i, pure=False) == i + 1
                assert link.statistics().messages_received - before == 1


def _take_a_while(x: int) -> int:
    time.sleep(0.005)  # the work itself: a task longer than worker.prefetch-duration allows
    return x


async def test_worker_queues_more_tasks_for_its_threads_while_tasks_are_short() -> None:
    async with Scheduler() as s, Worker(s.address, nthreads=2) as w:
        assert w.state.nthreads == 2 * (1 + 1)  # worker.prefetch-per-thread before any task
        async with Client(s.address, asynchronous=True) as client:
            # worker.prefetch-short-tasks: 3 queued per thread. Durations are wall
            # time, so a loaded machine may stretch a few; more tiny ones follow then
            for _ in range(20):
                assert await client.gather(client.map(inc, range(50), pure=False)) == list(
                    range(1, 51)
                )
                if w.state.nthreads == 2 * (1 + 3):
                    break
            assert w.state.nthreads == 2 * (1 + 3)
            for i in range(3):  # one at a time: each is measured before the next
                assert await client.submit(_take_a_while, i, pure=False) == i
            assert w.state.nthreads == 2 * (1 + 1)
