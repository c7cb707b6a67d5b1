"""Scenario c with the dashboard watched and the task stream recorded, against without.

    python benchmarks/dashboard_overhead.py [--rounds R] [--tasks N]
        [--watcher chromium|http|none] [--nice N]

One ``LocalCluster(2 workers of one thread, processes=True)`` serving its
dashboard. Each round runs two blocks of ``gather(map(inc, range(N)))``, in
the order watched, plain, then plain, watched, ...:

* watched: headless Chromium shows ``/status`` (it polls every
  ``dashboard.refresh-interval`` and redraws), and the block runs inside
  ``with client.get_task_stream() as ts:``;
* plain: the same Chromium frozen (``SIGSTOP`` to its process group: it
  neither polls nor draws, and takes no CPU), no recording.

Chromium loads the page once, at the start; between blocks it is frozen or
thawed (``SIGCONT``), at once. So blocks can be short and run back to back,
and the rounds many: on a small machine shared with other work, the noise
between blocks (other work coming and going) is what limits the measurement,
and many short rounds average it out. A thawed page polls at once (its
timer is due) for what the frozen time brought, and then every refresh
interval: each block starts a refresh interval after the thaw (a plain
block, after as long a pause), so that a watched block pays for polls about
its own runs, not for those of the plain block before it.

``--watcher http`` replaces the browser by a process that fetches what the
page fetches (``json/status?since=...&resolution=...`` every refresh
interval), frozen and thawed as the browser is: the scheduler's side of the
cost alone, without the browser's own CPU, which on a small machine competes
with the workers (a real browser runs elsewhere). ``--watcher none``: the
watched blocks only record the task stream, the control. ``--nice N`` runs
the watcher at niceness N (a browser that yields the CPU to the work).

Prints the median of the per-round ratios watched/plain (the issue's bar: at
least 0.95) with a bootstrap range of that median, the CPU the watcher used
while it watched, and the CPU time the scheduler's loop thread spent per
task in each kind of block (from ``/proc/self/task/<tid>/stat``). The
scheduler shares the cluster's loop thread only with the cluster's
bookkeeping: the client has its own.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the worker processes unpickle bench_tasks.inc too
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])

from bench_tasks import inc  # noqa: E402

from trioclust import Client, LocalCluster, config  # noqa: E402

_POLLER = """
import json, sys, time, urllib.request
base, interval = sys.argv[1], float(sys.argv[2])
since = 0
while True:
    # the page's resolution at its narrowest window (5 s over about 600 px)
    with urllib.request.urlopen(f"{base}/json/status?since={since}&resolution=0.0087") as response:
        since = json.loads(response.read())["task_stream"]["last_id"]
    time.sleep(interval)
"""


class Watcher:
    """A process group that watches the dashboard, frozen or thawed at will."""

    def __init__(self, argv: list[str], nice: int) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def freeze(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def cpu(self) -> float:
        """CPU seconds its processes have used (all of them: a session of its own)."""
        return session_cpu(self.proc.pid)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.proc.wait()


@contextlib.contextmanager
def watcher(kind: str, link: str, chromium: str, nice: int) -> Iterator[Watcher | None]:
    """The watcher of ``kind`` on the dashboard at ``link``, its page loaded, frozen."""
    if kind == "none":
        yield None
        return
    with tempfile.TemporaryDirectory() as profile:
        if kind == "chromium":
            argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={profile}", link]
        else:
            interval = config.get_float("dashboard.refresh-interval")
            argv = [sys.executable, "-c", _POLLER, link.rsplit("/status", 1)[0], str(interval)]
        w = Watcher(argv, nice)
        try:
            time.sleep(3.0)  # started, the page loaded and polling
            w.freeze()
            yield w
        finally:
            w.close()


_TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, session id)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        out[int(pid)] = (int(fields[1]), int(fields[3]))
    return out


def _runtime(pids: list[int]) -> float:
    """CPU seconds the live threads of ``pids`` have run, to the nanosecond
    (``/proc/<pid>/task/<tid>/schedstat``: the 100 Hz ticks of ``stat`` are
    too coarse for blocks of half a second)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
    return total / 1e9


def session_cpu(sid: int) -> float:
    """CPU seconds the live processes of session ``sid`` have used."""
    return _runtime([pid for pid, (_, s) in _processes().items() if s == sid])


def tree_cpu(root: int) -> float:
    """CPU seconds process ``root`` and its live descendants have used."""
    procs = _processes()
    found = []
    for pid in procs:
        p = pid
        while p > 1 and p != root:
            p = procs.get(p, (0, 0))[0]
        if p == root:
            found.append(pid)
    return _runtime(found)


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) a thread of this process has used."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def scheduler_thread(cluster: LocalCluster) -> int:
    """The native id of the thread running the cluster's scheduler."""
    thread = getattr(cluster._loop, "_thread", None)
    if thread is None or thread.native_id is None:
        raise RuntimeError("cannot find the scheduler's loop thread")
    return int(thread.native_id)


def block(
    client: Client, tasks: int, tid: int, cpu: list[float], total: list[float],
    watcher: Watcher | None = None,
) -> float:
    # each block starts with the same heap: a recording's records still held,
    # or garbage of the block before, would make the next block's collections
    # slower (they did: with the records of the last watched block held, plain
    # blocks ran 5% slower than recorded ones, nothing watching)
    gc.collect()

    def everything() -> float:
        return tree_cpu(os.getpid()) + (watcher.cpu() if watcher else 0.0)

    all0 = everything()
    start = time.perf_counter()
    cpu0 = thread_cpu(tid)
    client.gather(client.map(inc, range(tasks), pure=False))
    elapsed = time.perf_counter() - start
    cpu.append((thread_cpu(tid) - cpu0) / tasks)
    total.append((everything() - all0) / tasks)
    return tasks / elapsed


def bootstrap_median(values: list[float], n: int = 10_000) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the median of resamples of ``values``."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[n // 40], medians[n - n // 40 - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--watcher", choices=("chromium", "http", "none"), default="chromium")
    parser.add_argument("--nice", type=int, default=0, help="run the watcher at this niceness")
    parser.add_argument("--no-record", action="store_true",
                        help="watched blocks do not record the task stream (with --watcher none: A/A)")
    args = parser.parse_args()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        link = cluster.dashboard_link
        assert link is not None
        tid = scheduler_thread(cluster)
        cpu: dict[str, list[float]] = {"watched": [], "plain": []}
        # CPU per task of the whole cluster (this process, its nannies and
        # workers) and of the watcher while it watches: on a machine whose
        # cores the work keeps busy, what watching costs the work
        total: dict[str, list[float]] = {"watched": [], "plain": []}
        watcher_cpu: list[float] = []  # its CPU seconds per second of a watched block
        ratios = []
        settle = config.get_float("dashboard.refresh-interval") + 0.1
        with watcher(args.watcher, link, args.chromium, args.nice) as w:
            block(client, 2000, tid, [], [])  # warm-up
            for r in range(args.rounds):
                rates = {}
                order = ("watched", "plain") if r % 2 == 0 else ("plain", "watched")
                for name in order:
                    if name == "plain":
                        time.sleep(settle)
                        rates[name] = block(client, args.tasks, tid, cpu[name], total[name])
                        continue
                    recorder = contextlib.nullcontext() if args.no_record else client.get_task_stream()
                    with recorder as ts:
                        if w is not None:
                            w.thaw()
                        time.sleep(settle)  # its poll for what came while it was frozen
                        cpu0, t0 = (w.cpu() if w else 0.0), time.perf_counter()
                        rates[name] = block(client, args.tasks, tid, cpu[name], total[name], w)
                        if w is not None:
                            watcher_cpu.append((w.cpu() - cpu0) / (time.perf_counter() - t0))
                            w.freeze()
                    # every run recorded (besides, a task stolen from a busy
                    # worker leaves a "cancelled" run there)
                    if ts is not None:
                        done = sum(run["status"] == "memory" for run in ts.data)
                        assert done == args.tasks or len(ts.data) == 10_000, (done, len(ts.data))
                    del ts  # its records: not held through the next block
                ratios.append(rates["watched"] / rates["plain"])
                print(f"round {r}: watched {rates['watched']:,.0f} tasks/s, plain "
                      f"{rates['plain']:,.0f} tasks/s", flush=True)
    low, high = bootstrap_median(ratios)
    print(f"watcher {args.watcher}{f' (nice {args.nice})' if args.nice else ''}, "
          f"{args.rounds} rounds of {args.tasks:,} tasks")
    print(f"watched/plain per round: median {statistics.median(ratios):.3f} "
          f"(95% bootstrap range of the median {low:.3f}-{high:.3f}; "
          f"rounds {min(ratios):.2f} to {max(ratios):.2f})")
    if watcher_cpu:
        print(f"the watcher while watching: {statistics.median(watcher_cpu) * 100:.1f}% of one core (median)")
    per_round = [w / p for w, p in zip(total["watched"], total["plain"], strict=True)]
    low, high = bootstrap_median(per_round)
    print(f"CPU per task, cluster and watcher: watched {statistics.median(total['watched']) * 1e6:.1f} µs, "
          f"plain {statistics.median(total['plain']) * 1e6:.1f} µs; per round watched/plain median "
          f"{statistics.median(per_round):.3f} ({low:.3f}-{high:.3f})")
    watched, plain = statistics.median(cpu["watched"]), statistics.median(cpu["plain"])
    print(f"scheduler CPU per task: watched {watched * 1e6:.1f} µs, plain {plain * 1e6:.1f} µs, "
          f"ratio {watched / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
