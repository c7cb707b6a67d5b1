"""Where the scheduler's CPU goes during a map, by layer: exact thread CPU time.

    python benchmarks/scheduler_breakdown.py [--tasks N] [--workers W] [--repeats R]

Starts the benchmarks' trioclust cluster (a scheduler process, W nannied
worker processes of one thread), wraps a few functions inside the scheduler
process (with ``run_on_scheduler``) so that each adds its *exclusive*
thread CPU time (its own, without the wrapped functions it calls) to a
counter, runs ``gather(map(inc, range(N), pure=False))`` R times and prints,
per map, the scheduler's CPU per task (psutil) and its split:

* the state machine (``SchedulerState.handle``: transitions, placement),
* decoding and encoding messages (``codec.loads``/``dumps`` as the comms call them),
* the message handlers (``Link._dispatch_all`` itself: events from messages),
* ``Scheduler._handle`` itself (instructions into messages), the task stream,
  ``Link.send`` (queueing) and the writes at the end of a batch (syscalls),
* the rest: trio's loop, reads and framing, the links' tasks.

Unlike a sampling profile (``profile_trioclust.py``), the split is exact and
needs no ptrace; each wrapped call costs ~1 us more, so the total is a little
higher than without it. ``benchmarks/device/breakdown16-h200.txt`` is a run
with 16 workers on the 16-core device machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])

import psutil  # noqa: E402
from bench_tasks import inc  # noqa: E402
from clusters import open_cluster, sync_client  # noqa: E402


def install(dask_scheduler: Any) -> None:
    """In the scheduler process: wrap the layers (once)."""
    import builtins
    import functools

    import trioclust.comm.comm as comm_module
    import trioclust.comm.link as link_module
    import trioclust.core.scheduler_state as state_module

    clock = time.thread_time
    totals: dict[str, list[float]] = {}
    stack = [0.0]  # the wrapped callees' time within the current wrapped call
    builtins._trioclust_breakdown = totals  # type: ignore[attr-defined]

    def wrap(name: str, fn: Any) -> Any:
        totals[name] = [0.0, 0]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stack.append(0.0)
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = clock() - start
                inner = stack.pop()
                total = totals[name]
                total[0] += elapsed - inner
                total[1] += 1
                stack[-1] += elapsed

        return wrapper

    comm_module.loads = wrap("decode (codec.loads)", comm_module.loads)  # type: ignore[attr-defined]
    comm_module.dumps = wrap("encode (codec.dumps)", comm_module.dumps)  # type: ignore[attr-defined]
    link_module.Link._dispatch_all = wrap(  # type: ignore[method-assign]
        "message handlers (Link._dispatch_all itself)", link_module.Link._dispatch_all
    )
    link_module.Link._write_deferred = wrap(  # type: ignore[method-assign]
        "writes at a batch's end (send syscalls)", link_module.Link._write_deferred
    )
    link_module.Link.send = wrap("Link.send (queueing)", link_module.Link.send)  # type: ignore[method-assign]
    state_module.SchedulerState.handle = wrap(  # type: ignore[method-assign]
        "state machine (SchedulerState.handle)", state_module.SchedulerState.handle
    )
    dask_scheduler.task_stream.observe = wrap("task stream (TaskStream.observe)", dask_scheduler.task_stream.observe)
    dask_scheduler._handle = wrap("Scheduler._handle itself (instructions to messages)", dask_scheduler._handle)


def take() -> dict[str, list[float]]:
    """In the scheduler process: the counters so far, then zero them."""
    import builtins

    totals: dict[str, list[float]] = builtins._trioclust_breakdown  # type: ignore[attr-defined]
    out = {name: list(total) for name, total in totals.items()}
    for total in totals.values():
        total[:] = [0.0, 0]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.tasks
    with open_cluster("trioclust", args.workers, fresh=True) as info, sync_client(info) as client:
        client.wait_for_workers(args.workers)
        client.run_on_scheduler(install)
        client.gather(client.map(inc, range(2000), pure=False))  # warm-up
        scheduler = psutil.Process(info.scheduler_pid)
        for _ in range(args.repeats):
            client.run_on_scheduler(take)
            cpu0 = sum(scheduler.cpu_times()[:2])
            start = time.perf_counter()
            client.gather(client.map(inc, range(n), pure=False))
            seconds = time.perf_counter() - start
            cpu = (sum(scheduler.cpu_times()[:2]) - cpu0) / n * 1e6
            totals = client.run_on_scheduler(take)
            print(
                f"{args.workers} workers, {n / seconds:,.0f} tasks/s; the scheduler used "
                f"{cpu:.1f} us of CPU per task:"
            )
            for name, (seconds_in, calls) in sorted(totals.items(), key=lambda item: -item[1][0]):
                print(f"  {seconds_in / n * 1e6:6.1f} us  {calls / n:5.2f} calls per task  {name}")
            known = sum(total[0] for total in totals.values()) / n * 1e6
            print(f"  {cpu - known:6.1f} us  the rest: trio's loop, reads and framing, the links' tasks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
