"""Scenario c with the dashboard watched and the task stream recorded, against without.

    python benchmarks/dashboard_overhead.py [--rounds R] [--tasks N] [--watcher chromium|http]

One ``LocalCluster(2 workers of one thread, processes=True)`` serving its
dashboard. Each round runs two blocks of ``gather(map(inc, range(N)))``, in
the order watched, plain, then plain, watched, ...:

* watched: headless Chromium has ``/status`` open in a tab (it polls every
  ``dashboard.refresh-interval`` and redraws), and the block runs inside
  ``with client.get_task_stream() as ts:``;
* plain: no tab on the dashboard, no recording.

One headless Chromium runs for the whole benchmark on ``about:blank`` (idle,
it costs nothing measurable); each watched block opens a tab on ``/status``
through Chromium's DevTools HTTP endpoint a second before it starts, and
closes it when it ends. So the rounds can be many and short: on a small
shared machine the noise between blocks is what limits the measurement.

``--watcher http`` replaces the browser by a thread that fetches what the
page fetches (``json/status?since=...&resolution=...`` every refresh interval): the
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
import random
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
def chromium(path: str) -> Iterator[tuple[str, int]]:
    """Headless Chromium on ``about:blank``; yields its DevTools HTTP address
    and the id of the session its processes run in."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [path, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{path} did not start its DevTools endpoint")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port_file.read_text().split()[0]}", proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def tab_on(devtools: str, url: str) -> Iterator[None]:
    """A Chromium tab showing ``url`` until the block ends."""
    request = urllib.request.Request(f"{devtools}/json/new?{url}", method="PUT")
    with urllib.request.urlopen(request) as response:
        target = json.loads(response.read())["id"]
    try:
        time.sleep(1.0)  # let it load the page and start polling
        yield
    finally:
        urllib.request.urlopen(f"{devtools}/json/close/{target}").close()


@contextlib.contextmanager
def http_poller_on(url: str) -> Iterator[None]:
    """A thread polling ``json/status`` as the page does, until the block ends."""
    base = url.rsplit("/status", 1)[0]
    interval = config.get_float("dashboard.refresh-interval")
    stop = threading.Event()

    def poll() -> None:
        since = 0
        while not stop.wait(interval):
            # a resolution as the page's at its narrowest window (5 s over ~600 px)
            query = f"since={since}&resolution=0.0087"
            with urllib.request.urlopen(f"{base}/json/status?{query}") as response:
                since = json.loads(response.read())["task_stream"]["last_id"]

    thread = threading.Thread(target=poll, name="dashboard-poller")
    thread.start()
    try:
        time.sleep(1.0)  # as long as Chromium's tab is given to load
        yield
    finally:
        stop.set()
        thread.join()


_TICK = os.sysconf("SC_CLK_TCK")


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) the live processes of session ``sid`` have used."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[3]) == sid:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


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


def bootstrap_median(values: list[float], n: int = 10_000) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the median of resamples of ``values``."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return medians[n // 40], medians[n - n // 40 - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--watcher", choices=("chromium", "http"), default="chromium")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        devtools, browser = (
            stack.enter_context(chromium(args.chromium)) if args.watcher == "chromium" else ("", 0)
        )
        browser_cpu: list[float] = []  # Chromium's CPU seconds per second of a watched block
        cluster = stack.enter_context(LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ))
        client = stack.enter_context(Client(cluster))
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
                        tab_on(devtools, link) if args.watcher == "chromium"
                        else http_poller_on(link)
                    )
                    with watcher, client.get_task_stream() as ts:
                        cpu0, t0 = session_cpu(browser) if browser else 0.0, time.perf_counter()
                        rates[name] = block(client, args.tasks, tid, cpu[name])
                        if browser:
                            browser_cpu.append((session_cpu(browser) - cpu0) / (time.perf_counter() - t0))
                    assert len(ts.data) == min(args.tasks, 10_000)
                else:
                    time.sleep(1.0)  # as long as a watched block waits for its tab
                    rates[name] = block(client, args.tasks, tid, cpu[name])
                print(f"round {r} {name}: {rates[name]:,.0f} tasks/s, scheduler CPU "
                      f"{cpu[name][-1] * 1e6:.0f} µs/task", flush=True)
            ratios.append(rates["watched"] / rates["plain"])
    low, high = bootstrap_median(ratios)
    print(f"watched/plain per round: median {statistics.median(ratios):.3f} "
          f"(95% bootstrap range of the median {low:.3f}-{high:.3f}; "
          f"{', '.join(f'{x:.2f}' for x in sorted(ratios))})")
    if browser_cpu:
        print(f"Chromium while watching: {statistics.median(browser_cpu) * 100:.1f}% of one core (median)")
    watched, plain = statistics.median(cpu["watched"]), statistics.median(cpu["plain"])
    print(f"scheduler CPU per task: watched {watched * 1e6:.1f} µs, plain {plain * 1e6:.1f} µs, "
          f"ratio {watched / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
