"""Where trioclust spends its time in scenarios b, c, d and j1 (the dask.array
sum of many small chunks), per process, with py-spy.

    python benchmarks/profile_trioclust.py [--scenario b|c|d|j1] [--workers N] [--rate HZ]

Starts the benchmarks' trioclust cluster (a scheduler process, nannies, worker
processes), warms it up, then samples the scheduler, every worker and this
process (the client) with ``py-spy record`` while the scenario's workload runs.
For each process it prints the CPU time it used per unit of work (psutil),
then, from the samples taken while a thread held the GIL (``--gil``: time in
``epoll``, socket calls or waiting on a lock is not Python work and is left
out), the files and the functions with the most *self* samples (the function
itself was running), and the functions most often on the stack (*total*), as
percentages of that process's samples.

py-spy is not a dependency of the benchmarks: ``.venv-bench/bin/pip install
py-spy``. It needs permission to ptrace the processes (root, or
``kernel.yama.ptrace_scope=0``). The raw stacks are kept in
``benchmarks/results/profile-<scenario>-<process>.txt``, one ``stack count``
line each, the format flame graph tools read.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
)

import clusters  # noqa: E402
import psutil  # noqa: E402
from bench_tasks import inc  # noqa: E402
from scenarios_throughput import measure_map, measure_tree  # noqa: E402

TOP = 15
IDLE_SECONDS = 3.0


def _workload(scenario: str, client: Any, scale: float) -> tuple[Callable[[], None], int, str]:
    """The work, how many units it does, and what a unit is."""
    if scenario == "b":
        n = max(1, int(3000 * scale))

        def round_trips() -> None:
            for i in range(n):
                assert client.submit(inc, i, pure=False).result() == i + 1

        return round_trips, n, "round trip"
    if scenario == "c":
        n = max(1, int(20_000 * scale))

        def one_map() -> None:
            measure_map(client, n)

        return one_map, n, "task"
    if scenario == "d":
        leaves = max(2, 2 ** round(13 + math.log2(max(scale, 1e-3))))  # 8,192 at scale 1

        def one_tree() -> None:
            measure_tree(client, leaves)

        return one_tree, 2 * leaves - 1, "task"
    if scenario == "j1":
        import dask.array as da

        side = max(400, int(20_000 * math.sqrt(scale)) // 200 * 200)

        def array_sum() -> None:
            client.compute(da.ones((side, side), chunks=200).sum()).result()

        return array_sum, (side // 200) ** 2, "chunk"
    raise ValueError(f"unknown scenario {scenario!r}")


def _cpu(processes: dict[str, int]) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of each process so far."""
    return {name: tuple(psutil.Process(pid).cpu_times()[:2]) for name, pid in processes.items()}


def _since(before: dict[str, tuple[float, float]], processes: dict[str, int]) -> dict[str, tuple[float, float]]:
    now = _cpu(processes)
    return {n: (now[n][0] - before[n][0], now[n][1] - before[n][1]) for n in processes}


def _py_spy() -> str:
    candidate = Path(sys.executable).with_name("py-spy")
    found = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: .venv-bench/bin/pip install py-spy")
    return found


def _parse(path: Path) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Samples, and self counts per file, self and total counts per function."""
    samples = 0
    files: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        files[_file(frames[-1])] += count
        for frame in set(frames):
            total[frame] += count
    return samples, files, own, total


def _file(frame: str) -> str:
    # "name (trio/_core/_run.py:2712)" -> "trio/_core/_run.py"
    return frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0] or frame


def _short(frame: str) -> str:
    # "name (path/to/module.py:12)" -> "name (module.py:12)"
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name})" if where else frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("b", "c", "d", "j1"), default="c")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--scale", type=float, default=1.0, help="workload size factor")
    args = parser.parse_args(argv)
    py_spy = _py_spy()
    out = HERE / "results"
    out.mkdir(exist_ok=True)

    with clusters.open_cluster("trioclust", args.workers) as info, clusters.sync_client(info) as client:
        work, units, unit = _workload(args.scenario, client, args.scale)
        _workload(args.scenario, client, 0.05)[0]()  # warm-up
        processes = {"scheduler": info.scheduler_pid, "client": os.getpid()}
        processes |= {f"worker{i}": pid for i, pid in enumerate(info.worker_pids)}
        # the CPU an idle cluster uses (timers, heartbeats)
        before = _cpu(processes)
        time.sleep(IDLE_SECONDS)
        idle_cpu = _since(before, processes)
        # once without py-spy, for undisturbed timings and CPU per unit
        before = _cpu(processes)
        start = time.perf_counter()
        work()
        plain_seconds = time.perf_counter() - start
        plain_cpu = _since(before, processes)
        spies = {}
        for name, pid in processes.items():
            raw = out / f"profile-{args.scenario}-{name}.txt"
            spies[name] = (raw, subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
                 "--function", "--gil", "--output", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            ))
            clusters.record_process(spies[name][1].pid, f"py-spy on {name}")
        time.sleep(1.0)  # py-spy attaches
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        for _, spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for name, (_, spy) in spies.items():
            _, err = spy.communicate(timeout=60)
            if spy.returncode not in (0, -signal.SIGINT):
                print(f"py-spy on {name} failed ({spy.returncode}): {err.decode()[-500:]}")

    print(
        f"scenario {args.scenario}: {units:,} {unit}s in {plain_seconds:.2f} s, "
        f"{plain_seconds / units * 1e6:,.0f} us per {unit} "
        f"({seconds / units * 1e6:,.0f} us under py-spy)\n"
    )
    for name, (raw, _) in spies.items():
        user, system = plain_cpu[name]
        cpu = user + system
        print(
            f"== {name} (pid {processes[name]}): {cpu:.2f} CPU s ({system / cpu:.0%} in the kernel), "
            f"{cpu / plain_seconds:.0%} of one core, {cpu / units * 1e6:,.0f} CPU us per {unit} "
            f"(without py-spy); idle: {sum(idle_cpu[name]) / IDLE_SECONDS:.1%} of one core"
        )
        if not raw.exists():
            print("   no samples\n")
            continue
        samples, files, own, total = _parse(raw)
        print(f"   {samples} samples holding the GIL; self, by file:")
        for file, count in files.most_common(TOP // 2):
            print(f"   {count / samples:6.1%}  {file}")
        print("   self, by function:")
        for frame, count in own.most_common(TOP):
            print(f"   {count / samples:6.1%}  {_short(frame)}")
        print("   total (on the stack):")
        for frame, count in total.most_common(TOP + 10):
            print(f"   {count / samples:6.1%}  {_short(frame)}")
        print()
    strays = clusters.stray_processes()
    if strays:
        print(f"processes left running: {strays}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
