"""Paired A/B of a switch inside one running trioclust cluster: map throughput, or round trips.

    python benchmarks/paired.py SETTER A B [--rounds R] [--tasks N] [--workers W] [--round-trips]

Runs ``gather(map(inc, range(N), pure=False))`` in blocks on one cluster
(the benchmarks' scheduler process, W nannied worker processes of one thread),
switching between two settings before each block, in the order A B, B A,
A B, ... so that a drifting machine (30-50% here between minutes) weighs on
both alike. SETTER is Python source that defines ``set(value)``; it runs in
the scheduler, in every worker and in this process before each block with A
or B (evaluated as Python literals), e.g. a module constant added for the
measurement::

    python benchmarks/paired.py \\
        'def set(v):
             import trioclust.runtime.scheduler as s; s.SOME_SWITCH = v' True False

Prints, per setting, the median tasks/s and the scheduler's and all
processes' CPU per task over its blocks, then the median of the per-round
ratios A/B, which is the figure to trust: two blocks of one round ran a few
seconds apart. With ``--round-trips`` a block is N (default 400) sequential
``submit(inc, i, pure=False).result()`` instead (scenario b), and the figure
is its median round trip in us: there A/B below 1 means A is faster. Runs of
their own per setting (a cluster each) drift too much for b's 5-10% effects;
this did not (docs/performance.md, eighth session). Only differences that hold across rounds mean anything;
``--workers 16`` on a 16-core machine measures where the scheduler is the
ceiling (``benchmarks/device/paired16-h200.txt`` is such a run).
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])

import psutil  # noqa: E402
from bench_tasks import inc  # noqa: E402
from clusters import open_cluster, sync_client  # noqa: E402


def apply(setter: str, value: Any) -> None:
    """Run the SETTER source's ``set(value)`` here (also sent to the cluster's processes)."""
    namespace: dict[str, Any] = {}
    exec(setter, namespace)
    namespace["set"](value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("setter", help="Python source defining set(value)")
    parser.add_argument("a", help="the first value (a Python literal)")
    parser.add_argument("b", help="the second value (a Python literal)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=None, help="per block (10,000; 400 round trips)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--round-trips", action="store_true", help="time round trips (b), not a map")
    args = parser.parse_args()
    values = (ast.literal_eval(args.a), ast.literal_eval(args.b))
    n = args.tasks or (400 if args.round_trips else 10_000)

    with open_cluster("trioclust", args.workers, fresh=True) as info, sync_client(info) as client:
        client.wait_for_workers(args.workers)
        client.gather(client.map(inc, range(2000), pure=False))  # warm-up
        scheduler = psutil.Process(info.scheduler_pid)
        procs = [scheduler, *(psutil.Process(p) for p in info.worker_pids), psutil.Process()]

        def cpu(p: psutil.Process) -> float:
            t = p.cpu_times()
            return float(t.user + t.system)

        rate: list[list[float]] = [[], []]
        sched_cpu: list[list[float]] = [[], []]
        all_cpu: list[list[float]] = [[], []]
        for r in range(args.rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                client.run_on_scheduler(apply, args.setter, values[i])
                client.run(apply, args.setter, values[i])
                apply(args.setter, values[i])
                client.gather(client.map(inc, range(200), pure=False))  # settle on the setting
                s0, a0 = cpu(scheduler), sum(map(cpu, procs))
                if args.round_trips:
                    samples = []
                    for k in range(n):
                        start = time.perf_counter()
                        client.submit(inc, k, pure=False).result()
                        samples.append(time.perf_counter() - start)
                    rate[i].append(statistics.median(samples) * 1e6)
                else:
                    start = time.perf_counter()
                    client.gather(client.map(inc, range(n), pure=False))
                    rate[i].append(n / (time.perf_counter() - start))
                sched_cpu[i].append((cpu(scheduler) - s0) / n * 1e6)
                all_cpu[i].append((sum(map(cpu, procs)) - a0) / n * 1e6)
    unit, per = ("us round trip (median)", "round trip") if args.round_trips else ("tasks/s", "task")
    for i in (0, 1):
        print(
            f"{values[i]!r}: {statistics.median(rate[i]):,.0f} {unit} (median of {args.rounds}), "
            f"scheduler {statistics.median(sched_cpu[i]):.1f} us CPU per {per}, "
            f"all processes {statistics.median(all_cpu[i]):.1f}"
        )
    ratios = sorted(a / b for a, b in zip(rate[0], rate[1], strict=True))
    diffs = sorted(a - b for a, b in zip(sched_cpu[0], sched_cpu[1], strict=True))
    print(
        f"per round, {unit} A/B: median {statistics.median(ratios):.3f} "
        f"({', '.join(f'{x:.2f}' for x in ratios)}); scheduler CPU A-B: median "
        f"{statistics.median(diffs):+.1f} us ({', '.join(f'{x:+.0f}' for x in diffs)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
