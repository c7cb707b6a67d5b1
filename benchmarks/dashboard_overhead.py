"""Scenario c with the dashboard watched and the task stream recorded, against without.

    python benchmarks/dashboard_overhead.py [--rounds R] [--tasks N] [--watcher chromium|http]

One ``LocalCluster(2 workers of one thread, processes=True)`` serving its
dashboard. Each round runs two blocks of ``gather(map(inc, range(N)))``, in
the order watched, plain, then plain, watched, ...:

* watched: headless Chromium has ``/status`` open (it polls every
  ``dashboard.refresh-interval`` and redraws), and the block runs inside
  ``with client.get_task_stream() as ts:``;
* plain: no browser, no recording.

``--watcher http`` replaces the browser by a thread that fetches what the
page fetches (``json/status?since=...`` every refresh interval): the
scheduler's side of the cost alone, without the browser's own CPU, which on
a small machine competes with the workers (a real browser runs elsewhere).

Prints each block's tasks/s and the median of the per-round ratios
watched/plain (the issue's bar: at least 0.95), and the CPU time the
scheduler's loop thread spent per task in each kind of block (from
``/proc/self/task/<tid>/stat``): a figure that does not depend on how busy
the machine is, where the rate does. The scheduler shares the cluster's
loop thread only with the cluster's bookkeeping: the client has its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the worker processes unpickle bench_tasks.inc too
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])

from bench_tasks import inc  # noqa: E402

from trioclust import Client, LocalCluster, config  # noqa: E402


@contextlib.contextmanager
def chromium_on(url: str, chromium: str) -> Iterator[None]:
    """Headless Chromium showing ``url`` until the block ends."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            time.sleep(2.0)  # let it load the page and start polling
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def http_poller_on(url: str) -> Iterator[None]:
    """A thread polling ``json/status`` as the page does, until the block ends."""
    base = url.rsplit("/status", 1)[0]
    interval = config.get_float("dashboard.refresh-interval")
    stop = threading.Event()

    def poll() -> None:
        since = 0
        while not stop.wait(interval):
            with urllib.request.urlopen(f"{base}/json/status?since={since}") as response:
                since = json.loads(response.read())["task_stream"]["last_id"]

    thread = threading.Thread(target=poll, name="dashboard-poller")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


_TICK = os.sysconf("SC_CLK_TCK")


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


def block(client: Client, tasks: int, tid: int, cpu: list[float]) -> float:
    start = time.perf_counter()
    cpu0 = thread_cpu(tid)
    client.gather(client.map(inc, range(tasks), pure=False))
    elapsed = time.perf_counter() - start
    cpu.append((thread_cpu(tid) - cpu0) / tasks)
    return tasks / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--watcher", choices=("chromium", "http"), default="chromium")
    args = parser.parse_args()
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as cluster, Client(cluster) as client:
        link = cluster.dashboard_link
        assert link is not None
        tid = scheduler_thread(cluster)
        cpu: dict[str, list[float]] = {"watched": [], "plain": []}
        block(client, 2000, tid, [])  # warm-up
        ratios = []
        for r in range(args.rounds):
            rates = {}
            order = ("watched", "plain") if r % 2 == 0 else ("plain", "watched")
            for name in order:
                if name == "watched":
                    watcher = (
                        chromium_on(link, args.chromium) if args.watcher == "chromium"
                        else http_poller_on(link)
                    )
                    with watcher, client.get_task_stream() as ts:
                        rates[name] = block(client, args.tasks, tid, cpu[name])
                    assert len(ts.data) == min(args.tasks, 10_000)
                else:
                    rates[name] = block(client, args.tasks, tid, cpu[name])
                print(f"round {r} {name}: {rates[name]:,.0f} tasks/s, scheduler CPU "
                      f"{cpu[name][-1] * 1e6:.0f} µs/task", flush=True)
            ratios.append(rates["watched"] / rates["plain"])
    print(f"watched/plain per round: median {statistics.median(ratios):.3f} "
          f"({', '.join(f'{x:.2f}' for x in sorted(ratios))})")
    watched, plain = statistics.median(cpu["watched"]), statistics.median(cpu["plain"])
    print(f"scheduler CPU per task: watched {watched * 1e6:.1f} µs, plain {plain * 1e6:.1f} µs, "
          f"ratio {watched / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
