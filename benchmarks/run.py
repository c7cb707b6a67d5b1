"""Run trioclust's benchmarks against dask.distributed and print one table.

    python benchmarks/run.py [--quick | --tiny] [--workers N] [--only abcdefghij]
                             [--json PATH] [--no-dask]

Each scenario runs for trioclust and then for dask, in this process, each on a
fresh cluster of ``--workers`` worker processes of one thread on
tcp://127.0.0.1 (see ``clusters.py``), and checks its results. The table goes
to stdout, progress to stderr, the figures to a JSON file (by default
``benchmarks/results/bench-<date>.json``). The exit status is 1 if a scenario
failed or a process the benchmarks started is still alive at the end.
``make bench`` and ``make bench-quick`` run this from ``.venv-bench``, where
dask is installed; ``--no-dask`` runs trioclust alone (no dask needed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# the workers import the task functions (bench_tasks.py) from here
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
)
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import clusters  # noqa: E402 - after PYTHONPATH is set for the child processes
import report  # noqa: E402
import scenarios_asyncio  # noqa: E402
import scenarios_collections  # noqa: E402
import scenarios_latency  # noqa: E402
import scenarios_memory  # noqa: E402
import scenarios_raw  # noqa: E402
import scenarios_startup  # noqa: E402
import scenarios_throughput  # noqa: E402
import scenarios_transfer  # noqa: E402
import scenarios_ucx  # noqa: E402
from sizes import FULL, QUICK, TINY, Sizes  # noqa: E402

Scenario = Callable[[str, Sizes, int], dict[str, Any]]

SCENARIOS: dict[str, tuple[str, Scenario, tuple[str, ...]]] = {
    "h": ("raw limits: ping-pong, batched messages, bulk", scenarios_raw.run, ("raw",)),
    "a": ("cluster start and close", scenarios_startup.run, ("trioclust", "dask")),
    "b": ("submit().result() round trips", scenarios_latency.run, ("trioclust", "dask")),
    "c": ("gather(map(inc, range(N)))", scenarios_throughput.run_map, clusters.SYSTEMS),
    "d": ("tree reduction", scenarios_throughput.run_tree, ("trioclust", "dask")),
    "e": ("large array, worker to worker", scenarios_transfer.run, ("trioclust", "dask")),
    "f": ("scheduler memory per pending task", scenarios_memory.run, ("trioclust", "dask")),
    "g": ("b and c from asyncio", scenarios_asyncio.run, ("trioclust", "dask")),
    "i": ("e over ucx:// and tcp://", scenarios_ucx.run_scenario, ("trioclust",)),
    "j": ("dask collections: array, dataframe, delayed", scenarios_collections.run,
          ("trioclust", "dask")),
}
"""letter -> (what it measures, function, systems); run in this order (h first: b and e use it)."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (~2 min)")
    size.add_argument("--tiny", action="store_true", help="a smoke run of seconds (the test suite's)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--only", default="", help="scenario letters to run, e.g. 'bcd' or 'b,c' (default: all)"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the figures")
    parser.add_argument("--no-dask", action="store_true", help="run trioclust only")
    args = parser.parse_args(argv)
    unknown = set(args.only.replace(",", "")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {sorted(SCENARIOS)}")
    if args.workers < 2:
        parser.error("--workers must be at least 2 (scenario e moves data between two workers)")
    return args


def _machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _versions(with_dask: bool) -> dict[str, str]:
    import subprocess

    import trioclust

    versions = {"trioclust": trioclust.__version__}
    try:  # the tree measured: a commit, "-dirty" when it had uncommitted changes
        versions["trioclust_tree"] = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
            text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if with_dask:
        import dask
        import distributed

        versions |= {"dask": dask.__version__, "distributed": distributed.__version__}
    return versions


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and every process it started, reaped or alive."""
    import psutil

    me = psutil.Process()
    times = me.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue  # gone: reaped by its parent, whose children times count it
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _cpu_snapshot() -> tuple[float, float, float]:
    """(wall clock, CPU seconds busy machine-wide, this run's own CPU seconds)."""
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
    busy += getattr(t, "steal", 0)  # the hypervisor giving the CPU to someone else
    return time.monotonic(), busy, _own_cpu_seconds()


def _other_cpu_cores(before: tuple[float, float, float]) -> float:
    """Cores used on average by other programs (and the hypervisor) since ``before``."""
    wall, busy, own = (a - b for a, b in zip(_cpu_snapshot(), before, strict=True))
    return round(max(0.0, busy - own) / wall, 2) if wall > 0 else 0.0


def _run_scenarios(
    chosen: list[str], sizes: Sizes, args: argparse.Namespace,
    results: dict[str, dict[str, Any]], noise: dict[str, dict[str, float]], errors: list[str],
) -> None:
    for letter in chosen:
        what, fn, systems = SCENARIOS[letter]
        for system in systems:
            if args.no_dask and clusters.is_dask(system):
                continue
            print(f"  {letter} {what}: {system} ...", end="", flush=True, file=sys.stderr)
            t0 = time.perf_counter()
            cpu = _cpu_snapshot()
            try:
                results.setdefault(letter, {})[system] = fn(system, sizes, args.workers)
            except Exception as exc:
                errors.append(f"{letter}/{system}: {exc!r}")
                results.setdefault(letter, {})[system] = {"error": repr(exc)}
                print(" FAILED", file=sys.stderr)
                traceback.print_exc()
            else:
                # how much CPU other programs took meanwhile, to judge the noise
                others = noise.setdefault(letter, {})[system] = _other_cpu_cores(cpu)
                print(
                    f" {time.perf_counter() - t0:.1f} s (other programs: {others:.2f} cores)",
                    file=sys.stderr,
                )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    chosen = [s for s in SCENARIOS if not args.only or s in args.only]
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"note: the machine is busy (load average {load_start[0]:.2f} on {os.cpu_count()} "
            f"cores); the figures will be noisy", file=sys.stderr,
        )
    print(
        f"trioclust benchmarks ({sizes.name}, {args.workers} workers x 1 thread, "
        f"scenarios {''.join(sorted(chosen))}{', trioclust only' if args.no_dask else ''})",
        file=sys.stderr,
    )
    results: dict[str, dict[str, Any]] = {}
    noise: dict[str, dict[str, float]] = {}
    errors: list[str] = []
    clusters.share_clusters = sizes.share_clusters
    try:
        _run_scenarios(chosen, sizes, args, results, noise, errors)
    finally:
        clusters.close_shared_clusters()

    strays = clusters.stray_processes()
    path = args.json or HERE / "results" / f"bench-{started:%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "mode": sizes.name,
        "workers": args.workers,
        "threads_per_worker": 1,
        "machine": _machine(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "other_cpu_cores": noise,
        "versions": _versions(not args.no_dask),
        "sizes": {k: getattr(sizes, k) for k in sizes.__slots__},
        "results": results,
        "errors": errors,
        "stray_processes": strays,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")  # first: the figures are safe
    rows = report.build_rows(results, args.workers)
    document["rows"] = report.as_json(rows)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(report.table(rows))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if strays:
        print(f"error: processes left running: {strays}", file=sys.stderr)
    print(f"figures written to {path}", file=sys.stderr)
    return 1 if errors or strays else 0


if __name__ == "__main__":
    sys.exit(main())
