"""The nanny and its worker process.

Most tests run the real ``worker_process`` module with a fake worker
(``tests/_fake_worker.py``) or a process that refuses to close
(``tests/_stubborn_worker.py``), chosen through the Nanny's private
``_worker_module`` hook. The ``real`` tests run the real Worker against an
in-process Scheduler: ``pytest -k real``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import psutil
import pytest
import trio
import trio.testing

from trioclust import config
from trioclust.errors import NannyClosedError, WorkerStartError
from trioclust.runtime.nanny import Nanny
from trioclust.runtime.worker_process import EXIT_OK, EXIT_SCHEDULER_LOST, NO_REASON

# not the whole module under trio: the asyncio tests are plain functions that call asyncio.run
pytestmark = pytest.mark.slow

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
FAKE = "tests._fake_worker"
STUBBORN = "tests._stubborn_worker"
SCHEDULER = "tcp://127.0.0.1:1"  # never contacted by the fakes
BOUND = 30  # seconds any single wait in these tests may take before it is a failure


def fake_env(mode: str = "serve", **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": REPO_ROOT, "FAKE_WORKER_MODE": mode, **extra}


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    yield
    children = psutil.Process().children(recursive=True)
    assert not children, f"processes left behind: {children}"


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------- starting and closing


@pytest.mark.trio
async def test_nanny_starts_worker_and_closes_it_gracefully(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.nanny")
    with config.set(nanny__close_timeout=BOUND):
        async with Nanny(
            SCHEDULER, nthreads=2, name="alice", _worker_module=FAKE, env=fake_env()
        ) as n:
            pid = n.worker_pid
            assert pid is not None
            assert n.worker_address == f"fake://127.0.0.1:{pid}"
            assert psutil.Process(pid).is_running()
            assert n.restarts == 0
            assert n.close_reason is None
            start = trio.current_time()
        assert trio.current_time() - start < BOUND
    assert gone(pid)
    assert n.worker_pid is None
    assert n.worker_address is None
    # the child's stderr reached the logger and recent_logs, at the child's levels
    assert any("fake worker serves at" in line for line in n.recent_logs)
    assert any("'nthreads': 2" in line and "'name': 'alice'" in line for line in n.recent_logs)
    assert any("fake worker leaves its scheduler" in line for line in n.recent_logs)
    forwarded = [r for r in caplog.records if "fake worker serves at" in r.getMessage()]
    assert forwarded[0].levelno == logging.INFO
    assert forwarded[0].getMessage().startswith(f"[alice pid {pid}] ")
    assert not any("Warning" in line for line in n.recent_logs)
    # print() in a task goes to the logs, not to the control channel
    assert any("printed by a task" in line for line in n.recent_logs)
    # asked to close, it closed: no escalation
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("exited with code 0" in r.getMessage() for r in caplog.records)


@pytest.mark.trio
async def test_cancelling_serve_stops_the_worker() -> None:
    nanny = Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env())
    async with trio.open_nursery() as nursery:
        await nursery.start(nanny.serve)
        pid = nanny.worker_pid
        assert pid is not None
        nursery.cancel_scope.cancel()
    assert gone(pid)
    # the graceful path ran although the nanny was cancelled: the child's last words were kept
    assert any("fake worker leaves its scheduler" in line for line in nanny.recent_logs)


@pytest.mark.trio
async def test_close_from_another_task_ends_serve() -> None:
    nanny = Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env())
    async with trio.open_nursery() as nursery:
        await nursery.start(nanny.serve)
        pid = nanny.worker_pid
        assert pid is not None
        await nanny.close()
        await nanny.close()  # again: nothing to do
        await nanny.wait_closed()
    assert gone(pid)
    with pytest.raises(NannyClosedError):
        await nanny.wait_for_worker()


@pytest.mark.trio
async def test_first_worker_failing_to_start_raises_with_its_output() -> None:
    with pytest.raises(WorkerStartError) as info:
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env("fail")):
            pytest.fail("the nanny must not start")
    message = str(info.value)
    assert SCHEDULER in message
    assert "exited with code 1 before reporting its address" in message
    assert f"OSError: fake worker could not connect to {SCHEDULER}" in message


@pytest.mark.trio
async def test_first_worker_not_reporting_in_time_raises() -> None:
    with config.set(nanny__start_timeout=0.5), pytest.raises(WorkerStartError) as info:
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env("silent")):
            pytest.fail("the nanny must not start")
    assert "did not report its address within 0.5 s ('nanny.start-timeout')" in str(info.value)
    assert SCHEDULER in str(info.value)


# ---------------------------------------------------------------------- restarts


@pytest.mark.trio
async def test_killed_worker_is_restarted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.nanny")
    async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env()) as nanny:
        old = nanny.worker_pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        with trio.fail_after(BOUND):
            new = await nanny.wait_for_worker(pid_not=old)
        assert new != old
        assert nanny.worker_address == f"fake://127.0.0.1:{new}"
        assert nanny.restarts == 1
        assert gone(old)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"pid {old}" in m and "was killed by signal SIGKILL" in m for m in warnings)
    assert gone(new)


@pytest.mark.trio
async def test_worker_dying_young_is_restarted_after_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.nanny")
    marker = tmp_path / "crashed-pid"
    env = fake_env("crash-once", FAKE_WORKER_MARKER=str(marker))
    with config.set(nanny__restart_backoff=0.3):
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=env) as nanny:
            with trio.fail_after(BOUND):
                await nanny.wait_for_worker()  # the first one, or already its replacement
                crashed = int(await trio.Path(marker).read_text())
                new = await nanny.wait_for_worker(pid_not=crashed)
            assert new != crashed
            assert nanny.restarts == 1
    records = {r.getMessage(): r.created for r in caplog.records}
    died = next(t for m, t in records.items() if f"pid {crashed}] The worker process exited" in m)
    serving = next(t for m, t in records.items() if f"pid {new}] Worker process serves" in m)
    assert serving - died >= 0.3
    assert any("fake worker crashes now" in line for line in nanny.recent_logs)


@pytest.mark.trio
async def test_worker_that_lost_its_scheduler_stops_the_nanny(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nanny = Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env("lost"))
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(nanny.serve)
            await nanny.wait_closed()  # serve() ends by itself
    assert nanny.close_reason == f"lost the scheduler at {SCHEDULER} (fake)"
    assert nanny.restarts == 0
    assert nanny.worker_pid is None
    assert any(
        r.levelno == logging.ERROR and "stopped by itself" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(NannyClosedError, match="lost the scheduler"):
        await nanny.wait_for_worker()
    await nanny.close()  # harmless after the end


# -------------------------------------------------------------------- escalation


@pytest.mark.parametrize("honours_sigterm", [True, False], ids=["terminated", "killed"])
@pytest.mark.trio
async def test_close_escalates_for_a_worker_that_will_not_close(
    honours_sigterm: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.nanny")
    env = {"STUBBORN_HONOURS_SIGTERM": "1" if honours_sigterm else "0", "PYTHONPATH": REPO_ROOT}
    close_timeout, terminate_timeout = 0.3, 0.3
    with config.set(nanny__close_timeout=close_timeout, nanny__terminate_timeout=terminate_timeout):
        async with Nanny(SCHEDULER, _worker_module=STUBBORN, env=env) as nanny:
            pid = nanny.worker_pid
            assert pid is not None
            start = trio.current_time()
        took = trio.current_time() - start
    assert gone(pid)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("did not close within 0.3 s" in m for m in warnings)
    if honours_sigterm:
        assert close_timeout <= took < close_timeout + BOUND
        assert not any("killing it" in m for m in warnings)
        assert any("was killed by signal SIGTERM" in r.getMessage() for r in caplog.records)
    else:
        assert close_timeout + terminate_timeout <= took < close_timeout + terminate_timeout + BOUND
        assert any("did not exit within 0.3 s of SIGTERM" in m for m in warnings)
        assert any("was killed by signal SIGKILL" in r.getMessage() for r in caplog.records)


@pytest.mark.trio
async def test_a_worker_stuck_in_its_graceful_close_stops_on_sigterm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.nanny")
    with config.set(nanny__close_timeout=0.3, nanny__terminate_timeout=BOUND):
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env("hang-on-close")) as nanny:
            pid = nanny.worker_pid
            assert pid is not None
    assert gone(pid)
    messages = [r.getMessage() for r in caplog.records]
    assert any("did not close within 0.3 s" in m for m in messages)
    assert any("Stopping the worker at once because it received SIGTERM" in m for m in messages)
    assert any(f"pid {pid}] The worker process exited with code 0" in m for m in messages)
    assert not any("killing it" in m for m in messages)


@pytest.mark.trio
async def test_cancelling_the_body_of_async_with_stops_the_worker() -> None:
    with trio.CancelScope() as scope:
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env()) as nanny:
            pid = nanny.worker_pid
            assert pid is not None
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert pid is not None
    assert gone(pid)
    assert any("fake worker leaves its scheduler" in line for line in nanny.recent_logs)


@pytest.mark.trio
async def test_cancelling_a_nanny_that_is_still_starting() -> None:
    with config.set(nanny__start_timeout=BOUND), trio.move_on_after(0.5) as scope:
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env("silent")):
            pytest.fail("the worker never starts")
    assert scope.cancelled_caught


@pytest.mark.trio
async def test_close_while_starting_raises_nanny_closed() -> None:
    nanny = Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env("silent"))

    async def close_once_waiting() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the nanny waits for the address
        await nanny.close()

    with config.set(nanny__start_timeout=BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_once_waiting)
            with pytest.raises(NannyClosedError, match="closed before its worker started"):
                await nursery.start(nanny.serve)


# ----------------------------------------------------------------------- asyncio


def test_nanny_under_asyncio() -> None:
    async def main() -> tuple[int, int, Nanny]:
        async with Nanny(SCHEDULER, name="aio", _worker_module=FAKE, env=fake_env()) as nanny:
            assert threading.current_thread() is threading.main_thread()
            assert nanny.status == "running"
            old = nanny.worker_pid
            assert old is not None
            assert nanny.worker_address == f"fake://127.0.0.1:{old}"
            # a wait that asyncio cancels ends in the nanny's thread too
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(nanny.wait_for_worker(pid_not=old), 0.1)
            os.kill(old, signal.SIGKILL)
            new = await asyncio.wait_for(nanny.wait_for_worker(pid_not=old), BOUND)
            assert nanny.restarts == 1
        return old, new, nanny

    old, new, nanny = asyncio.run(main())
    assert old != new
    assert gone(old)
    assert gone(new)
    assert nanny.status == "closed"
    assert nanny.worker_pid is None
    assert any("fake worker leaves its scheduler" in line for line in nanny.recent_logs)


def test_nanny_under_asyncio_reports_a_failed_start() -> None:
    async def main() -> None:
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env("fail")):
            pytest.fail("the nanny must not start")

    with pytest.raises(WorkerStartError, match="fake worker could not connect"):
        asyncio.run(main())


def test_nanny_under_asyncio_closed_explicitly() -> None:
    async def main() -> Nanny:
        nanny = Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env())
        await nanny.close()  # before it started: nothing to do
        async with Nanny(SCHEDULER, _worker_module=FAKE, env=fake_env()) as nanny:
            await nanny.close()
            await nanny.wait_closed()
            assert nanny.status == "closed"
            with pytest.raises(NannyClosedError):
                await nanny.wait_for_worker()
        return nanny

    nanny = asyncio.run(main())
    assert nanny.worker_pid is None


# ------------------------------------------------------- the worker process on its own


async def _start_fake_process(mode: str = "serve") -> tuple[trio.Process, dict[str, object], bytes]:
    """Start the worker process; return it, its first stdout line parsed, and what followed."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", FAKE, "--scheduler", SCHEDULER],
        stdin=PIPE,
        stdout=PIPE,
        stderr=PIPE,
        env={**os.environ, **fake_env(mode)},
    )
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(BOUND):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some()
            assert chunk, "the worker process exited before reporting its address"
            buffer += chunk
    first, rest = buffer.split(b"\n", 1)
    return process, json.loads(first), rest


async def _finish(process: trio.Process, out: bytes = b"") -> tuple[int, bytes, bytes]:
    """Wait for the exit; return the code and what stdout and stderr still carried."""
    assert process.stdout is not None
    assert process.stderr is not None
    err = b""
    with trio.fail_after(BOUND):
        while chunk := await process.stdout.receive_some():
            out += chunk
        while chunk := await process.stderr.receive_some():
            err += chunk
        code = await process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()
    return code, out, err


@pytest.mark.parametrize("how", ["close-line", "stdin-eof", "sigterm", "sigint"])
@pytest.mark.trio
async def test_worker_process_closes_when_asked(how: str) -> None:
    process, hello, rest = await _start_fake_process()
    assert hello == {"address": f"fake://127.0.0.1:{process.pid}", "pid": process.pid}
    assert process.stdin is not None
    if how == "close-line":
        await process.stdin.send_all(b"close\n")
    elif how == "stdin-eof":  # what a dead nanny looks like
        await process.stdin.aclose()
    else:
        process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    code, out, err = await _finish(process, rest)
    assert code == EXIT_OK
    assert out == b""  # stdout carried the one JSON line and nothing else
    assert b"printed by a task" in err
    assert b"fake worker leaves its scheduler" in err


@pytest.mark.parametrize("mode", ["lost", "quit"])
@pytest.mark.trio
async def test_worker_process_that_stops_by_itself_exits_3(mode: str) -> None:
    process, _, rest = await _start_fake_process(mode)
    code, out, err = await _finish(process, rest)
    assert code == EXIT_SCHEDULER_LOST
    reason = f"lost the scheduler at {SCHEDULER} (fake)" if mode == "lost" else NO_REASON
    assert json.loads(out) == {"close_reason": reason}
    assert b" - ERROR - " in err
    assert f"stopped by itself, for good (a nanny will not restart it): {reason}".encode() in err


# --------------------------------------------------------- with the real Worker (-k real)


_MISSING = [
    module
    for module in ("trioclust.runtime.scheduler", "trioclust.runtime.worker")
    if importlib.util.find_spec(module) is None
]
needs_real_servers = pytest.mark.skipif(
    bool(_MISSING), reason=f"not written yet: {', '.join(_MISSING)}"
)


@needs_real_servers
@pytest.mark.trio
async def test_real_worker_process_registers_with_the_scheduler() -> None:
    from trioclust.runtime.scheduler import Scheduler

    async with Scheduler() as s:
        async with Nanny(s.address, nthreads=2, name="real-1") as nanny:
            with trio.fail_after(BOUND):
                await s.wait_for_workers(1)
            assert len(s.state.workers) == 1
            assert nanny.worker_address in s.state.workers
            pid = nanny.worker_pid
            assert pid is not None
        assert gone(pid)
        # it left gracefully, and started without warnings
        assert any("because the nanny asked it to close" in line for line in nanny.recent_logs)
        assert not any("Warning" in line for line in nanny.recent_logs)


@needs_real_servers
@pytest.mark.trio
async def test_real_worker_process_is_restarted_after_sigkill() -> None:
    from trioclust.runtime.scheduler import Scheduler

    async with Scheduler() as s:
        async with Nanny(s.address, name="real-2") as nanny:
            with trio.fail_after(BOUND):
                await s.wait_for_workers(1)
            old_pid, old_address = nanny.worker_pid, nanny.worker_address
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)
            with trio.fail_after(BOUND):
                new_pid = await nanny.wait_for_worker(pid_not=old_pid)
                # the new worker reports its address only once it has registered
                await s.wait_for_workers(1)
            assert new_pid != old_pid
            assert nanny.worker_address != old_address
            assert nanny.worker_address in s.state.workers
            assert nanny.restarts == 1
        assert gone(new_pid)


@needs_real_servers
@pytest.mark.trio
async def test_real_worker_that_loses_its_scheduler_stops_the_nanny() -> None:
    from trioclust.runtime.scheduler import Scheduler

    nanny: Nanny | None = None
    async with trio.open_nursery() as nursery:
        async with Scheduler() as s:
            nanny = Nanny(s.address, name="real-3", reconnect_timeout=0.5)
            await nursery.start(nanny.serve)
            with trio.fail_after(BOUND):
                await s.wait_for_workers(1)
            pid = nanny.worker_pid
            assert pid is not None
        # the scheduler is gone; the worker gives up after its reconnect timeout
        with trio.fail_after(BOUND):
            await nanny.wait_closed()
    assert nanny.close_reason is not None
    assert "lost the scheduler" in nanny.close_reason
    assert nanny.restarts == 0
    assert gone(pid)


@needs_real_servers
@pytest.mark.trio
async def test_real_worker_retired_by_the_scheduler_is_not_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trioclust.runtime.scheduler import Scheduler

    async with Scheduler() as s:
        nanny = Nanny(s.address, name="real-4")
        async with trio.open_nursery() as nursery:
            await nursery.start(nanny.serve)
            with trio.fail_after(BOUND):
                await s.wait_for_workers(1)
            pid = nanny.worker_pid
            assert pid is not None
            with trio.fail_after(BOUND):
                assert await s.retire_workers([nanny.worker_address or ""]) == [
                    nanny.worker_address
                ]
                await nanny.wait_closed()  # serve() ends by itself
    assert nanny.restarts == 0
    assert nanny.status == "closed"
    assert gone(pid)
    # the log says why the nanny stopped: the reason the worker gave
    reason = nanny.close_reason
    assert reason is not None
    assert "retired" in reason
    stopped = [r.getMessage() for r in caplog.records if "so the nanny stops too" in r.getMessage()]
    assert stopped == [
        f"[real-4 pid {pid}] The worker stopped by itself, so the nanny stops too: {reason}"
    ]
    assert any(
        f"stopped by itself, for good (a nanny will not restart it): {reason}" in line
        for line in nanny.recent_logs
    )
