"""Where one ``submit(...).result()`` round trip (scenario b) spends its time, to the microsecond.

    python benchmarks/trace_round_trip.py [--rounds N] [--show K] [--skip S]

Starts the benchmarks' trioclust cluster (a scheduler process, two nannied
worker processes of one thread, the client in this process), warms it up, and
runs N round trips while ``perf record`` traces, on every CPU, the system
calls where the processes hand work to each other: ``sendto``, ``recvfrom``,
``epoll_wait`` and ``futex`` (a thread hand-off, or the GIL), plus the
scheduler's context switches. It then prints K consecutive round trips,
starting after the S-th, as one timeline: microseconds since the client's
user thread started the round trip, the CPU, the thread (``sched-main``,
``w0-main`` and ``w0-<tid>`` for a worker's event loop and task thread,
``cli-user`` and ``cli-<tid>`` for the client's thread and its event loop
thread) and the event.

Reading it: ``exit_epoll_wait`` is a process waking; the gap from there to its
``recvfrom`` is the event loop's own work; ``recvfrom`` to the next
``sendto`` is decoding and handling; ``futex`` pairs between two threads of a
process are hand-offs (a worker's loop and task thread, the client's user and
loop thread) and waits for the GIL. The median of the whole round trip is
printed too; tracing adds a few percent to it.

This is how the seventh session's timeline in docs/performance.md was taken.
Needs ``perf`` (Debian's ``linux-perf``) and permission to trace
(root, or ``kernel.perf_event_paranoid`` <= 1).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])

import psutil  # noqa: E402
from bench_tasks import inc  # noqa: E402
from clusters import TrioclustCluster, sync_client  # noqa: E402

SYSCALLS = ("sendto", "recvfrom", "epoll_wait", "futex")
LINE = re.compile(r"\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)")


def thread_names(info: object, user_tid: int) -> dict[int, str]:
    """tid -> a short name for every thread of the cluster and of this process."""
    names: dict[int, str] = {}
    pids = [("sched", info.scheduler_pid)]  # type: ignore[attr-defined]
    pids += [(f"w{i}", pid) for i, pid in enumerate(info.worker_pids)]  # type: ignore[attr-defined]
    pids.append(("cli", os.getpid()))
    for label, pid in pids:
        for thread in psutil.Process(pid).threads():
            names[thread.id] = f"{label}-{'main' if thread.id == pid else thread.id}"
    names[user_tid] = "cli-user"
    return names


def parse(script: str, names: dict[int, str]) -> list[tuple[float, int, str, str]]:
    """``perf script`` output -> (seconds, cpu, thread, event) for the cluster's threads."""
    rows = []
    for line in script.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        tid, cpu, t, event, rest = int(m[1]), int(m[2]), float(m[3]), m[4], m[5]
        if event == "sched:sched_switch":
            prev = int(re.search(r"prev_pid=(\d+)", rest)[1])  # type: ignore[index]
            nxt = int(re.search(r"next_pid=(\d+)", rest)[1])  # type: ignore[index]
            if prev in names or nxt in names:
                state = re.search(r"prev_state=(\S+)", rest)[1]  # type: ignore[index]
                rows.append((t, cpu, "", f"switch {names.get(prev, prev)}({state}) -> {names.get(nxt, nxt)}"))
        elif tid in names:
            rows.append((t, cpu, names[tid], event.replace("syscalls:sys_", "") + " " + rest[:48]))
    return rows


#: The steps of a round trip, each ending at the event that starts the next.
STEPS = (
    ("client: user thread builds the task, its loop encodes and sends it", "cli-loop", "enter_sendto"),
    ("wire, scheduler wakes", "sched-main", "exit_epoll_wait"),
    ("scheduler's loop until it reads", "sched-main", "exit_recvfrom"),
    ("scheduler decodes, handles, sends compute-task", "sched-main", "enter_sendto"),
    ("wire, worker wakes", "worker-main", "exit_epoll_wait"),
    ("worker's loop until it reads", "worker-main", "exit_recvfrom"),
    ("worker decodes, handles, sends task-started", "worker-main", "enter_sendto"),
    ("task handed to a thread, run, handed back, task-finished sent", "worker-main", "enter_sendto"),
    ("wire, scheduler wakes, reads, handles, sends the result", "sched-result", "enter_sendto"),
    ("wire, client's loop wakes", "cli-loop", "exit_epoll_wait"),
    ("client's loop decodes, wakes the user thread", "cli-user", "exit_futex"),
    ("user thread returns, starts the next round trip", "cli-user", "enter_sendto"),
)


def _is(thread: str, who: str, worker: str) -> bool:
    """Whether ``thread`` is the one a step names (``worker``: the worker seen so far)."""
    if who == "cli-loop":
        return thread.startswith("cli-") and thread != "cli-user"
    if who == "worker-main":
        return thread == worker if worker else thread.startswith("w") and thread.endswith("-main")
    return thread == who


def steps(rows: list[tuple[float, int, str, str]], starts: list[int]) -> list[list[float]]:
    """Microseconds per step (:data:`STEPS`) of each traced round trip that
    shows every step's event, in order. A round trip runs from one start (the
    user thread waking its loop) to the next; the last step ends at the next."""
    out = []
    for first, end in itertools.pairwise(starts):
        window = rows[first:end]
        times = [rows[first][0]]
        worker = ""
        i = 1
        for _, who, event in STEPS[:-1]:
            found: int | None
            if who == "sched-result":  # the scheduler's last send before the client's loop wakes
                wake = next((k for k in range(i, len(window)) if _is(window[k][2], "cli-loop", "")
                             and window[k][3].startswith("exit_epoll_wait")), len(window))
                sends = [k for k in range(i, wake)
                         if window[k][2] == "sched-main" and window[k][3].startswith(event)]
                found = sends[-1] if sends else None
            else:
                found = next((k for k in range(i, len(window))
                              if _is(window[k][2], who, worker) and window[k][3].startswith(event)), None)
            if found is None:
                break
            i = found
            if who == "worker-main":
                worker = window[i][2]
            times.append(window[i][0])
            i += 1
        else:
            times.append(rows[end][0])
            out.append([(b - a) * 1e6 for a, b in itertools.pairwise(times)])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="round trips traced")
    parser.add_argument("--show", type=int, default=2, help="round trips printed")
    parser.add_argument("--skip", type=int, default=150, help="traced round trips before the first printed")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed (Debian: apt install linux-perf)", file=sys.stderr)
        return 2
    events = ",".join(f"syscalls:sys_{p}_{s}" for s in SYSCALLS for p in ("enter", "exit"))
    with tempfile.TemporaryDirectory() as tmp, TrioclustCluster(2) as info, sync_client(info) as client:
        for i in range(300):  # warm-up
            assert client.submit(inc, i, pure=False).result() == i + 1
        names = thread_names(info, threading.get_native_id())
        data = Path(tmp) / "perf.data"
        recorder = subprocess.Popen(
            ["perf", "record", "-q", "-a", "-e", events, "-e", "sched:sched_switch", "-o", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(1.5)  # perf attaches to every CPU's tracepoints
        if recorder.poll() is not None:
            print(f"perf record failed: {recorder.stderr.read().decode()}", file=sys.stderr)  # type: ignore[union-attr]
            return 2
        samples = []
        for i in range(args.rounds):
            start = time.perf_counter()
            assert client.submit(inc, i, pure=False).result() == i + 1
            samples.append(time.perf_counter() - start)
        recorder.send_signal(signal.SIGINT)
        recorder.wait()
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "tid,cpu,time,event,trace"],
            capture_output=True, text=True, check=True,
        ).stdout
    rows = parse(script, names)
    # a round trip starts when the user thread's submit wakes the client's loop
    starts = [i for i, r in enumerate(rows) if r[2] == "cli-user" and r[3].startswith("enter_sendto")]
    print(f"{len(samples)} round trips traced, median {statistics.median(samples) * 1e6:.0f} us")
    if len(starts) <= args.skip + args.show:
        print("too few round trips in the trace to show", file=sys.stderr)
        return 1
    first, end = starts[args.skip], starts[args.skip + args.show]
    t0 = rows[first][0]
    for t, cpu, thread, event in rows[first:end]:
        print(f"{(t - t0) * 1e6:8.0f} [{cpu}] {thread:12s} {event}")
    parsed = steps(rows, starts)
    if parsed:
        print(f"\nmedian us per step, over the {len(parsed)} round trips that show every step:")
        for n, (label, _, _) in enumerate(STEPS):
            print(f"  {statistics.median(r[n] for r in parsed):7.0f}  {label}")
        print(f"  {statistics.median(sum(r) for r in parsed):7.0f}  in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
