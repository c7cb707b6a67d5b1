"""Scenario e over UCX: a 200 MB array made on worker A, fetched by worker B, ``ucx://`` against ``tcp://``.

Method: the one of :mod:`scenarios_transfer` (a task makes the array on A;
``client.run`` on B fetches the key from A through B's own connection pool
with one ``get-data`` request and unpickles it, timed inside B; the
connection opens before the timer; the first fetch is a warm-up; the best of
the rest is reported, and B's sum of the array is checked), on a cluster
that is the same for both schemes: a scheduler listening on
``SCHEME://127.0.0.1:0`` in a trio loop on a thread of this process, and two
worker processes, each started by a :class:`trioclust.Nanny` in that loop.
Workers listen on their scheduler's scheme, so the fetch crosses ``SCHEME``.

UCX needs ``ucxx`` (``pip install -e '.[ucx]'``). On a machine without a GPU
it also needs ``UCX_TLS=tcp,self,sm``, which :func:`main` sets unless the
environment already has a ``UCX_TLS``; the worker processes inherit it.

Run from the repository root::

    .venv/bin/python benchmarks/scenarios_ucx.py [--bytes N] [--repeats N] [--schemes ucx,tcp]
        [--array numpy|cupy] [--json FILE]

Or from another runner: ``scenarios_ucx.run_transfer("ucx")`` returns MB/s,
``scenarios_ucx.run("ucx", nbytes, repeats)`` the full record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# the worker processes unpickle bench_tasks' functions by reference
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import trio  # noqa: E402
from bench_tasks import make_array, trioclust_fetch, trioclust_who_has  # noqa: E402
from scenarios_transfer import timed_fetches  # noqa: E402

START_TIMEOUT = 120.0  # seconds the cluster may take to start (UCX's first start is slow)
DEFAULT_BYTES = 200 * 2**20
N_WORKERS = 2


class SchemeCluster:
    """A scheduler on ``scheme://127.0.0.1:0`` and :data:`N_WORKERS` nanny-run worker
    processes, in a trio loop on a thread of this process."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.address = ""
        self.worker_pids: list[int] = []
        self._ready = threading.Event()
        self._token: Any = None
        self._stop: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"bench-{scheme}-cluster")

    def __enter__(self) -> SchemeCluster:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError(f"the {self.scheme} cluster did not start in {START_TIMEOUT} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to __enter__ or __exit__
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        from trioclust import Nanny, Scheduler

        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with Scheduler(address=f"{self.scheme}://127.0.0.1:0") as scheduler:
            self.address = scheduler.address
            nannies = [Nanny(scheduler.address, nthreads=1) for _ in range(N_WORKERS)]
            async with trio.open_nursery() as nursery:
                with trio.fail_after(START_TIMEOUT):
                    async with trio.open_nursery() as starting:  # side by side
                        for nanny in nannies:
                            starting.start_soon(nursery.start, nanny.serve)
                self.worker_pids = [n.worker_pid for n in nannies if n.worker_pid is not None]
                self._ready.set()
                await self._stop.wait()
                async with trio.open_nursery() as closing:
                    for nanny in nannies:
                        closing.start_soon(nanny.close)


@contextlib.contextmanager
def _client(address: str) -> Iterator[Any]:
    from trioclust import Client

    client = Client(address)
    try:
        client.wait_for_workers(N_WORKERS)
        yield client
    finally:
        client.close()


def make_cupy_array(nbytes: int) -> Any:
    """:func:`bench_tasks.make_array` on the GPU: a CuPy float64 array holding 0, 1, 2, ..."""
    import cupy

    return cupy.arange(nbytes // 8, dtype=cupy.float64)


def run(
    scheme: str, nbytes: int = DEFAULT_BYTES, repeats: int = 3, *, array: str = "numpy"
) -> dict[str, Any]:
    """Fetch an ``nbytes`` array worker to worker over ``scheme``, ``repeats`` times after a warm-up.

    Args:
        scheme: ``"ucx"``, ``"tcp"``, ...
        nbytes: the array's size.
        repeats: fetches timed after the warm-up.
        array: ``"numpy"``, or ``"cupy"`` for an array on the GPU (pickled
            through host memory: trioclust's frames are host buffers).

    Returns:
        ``scheme``, ``array``, ``bytes``, ``mb_per_s`` (of the best fetch, 1 MB
        = 10**6 bytes), ``runs_s``, ``warmup_s``, ``holder``, ``fetcher``.
    """
    maker = make_cupy_array if array == "cupy" else make_array
    with SchemeCluster(scheme) as cluster, _client(cluster.address) as client:
        workers = sorted(client.scheduler_info()["workers"])
        future = client.submit(maker, nbytes, pure=False)
        future.result()
        holders = client.run_on_scheduler(trioclust_who_has, future.key)
        assert all(h.startswith(f"{scheme}://") for h in holders), holders
        record = timed_fetches(client, trioclust_fetch, future.key, holders, workers, nbytes, repeats)
        del future
    return {"scheme": scheme, "array": array, **record}


def run_scenario(system: str, sizes: Any, n_workers: int) -> dict[str, Any]:
    """Scenario i of ``benchmarks/run.py``: :func:`run` over ``ucx`` and then ``tcp``.

    Always two worker processes (the transfer is between two), of the size
    and repeats of scenario e. Without ``ucxx`` installed (``pip install -e
    '.[ucx]'``), returns ``{"skipped": why}``.
    """
    from trioclust.transport.ucx import ucx_available

    assert system == "trioclust", system
    if not ucx_available():
        return {"skipped": "ucxx is not installed (pip install -e '.[ucx]')"}
    os.environ.setdefault("UCX_TLS", "tcp,self,sm")  # inherited by the worker processes
    return {
        scheme: run(scheme, sizes.transfer_bytes, sizes.transfer_repeats) for scheme in ("ucx", "tcp")
    }


def run_transfer(scheme: str, size: int = DEFAULT_BYTES, repeats: int = 3) -> float:
    """MB/s (10**6 bytes per second) of the best worker-to-worker fetch of ``size`` bytes."""
    return float(run(scheme, size, repeats)["mb_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bytes", type=int, default=DEFAULT_BYTES, help="the array's size")
    parser.add_argument("--repeats", type=int, default=3, help="fetches timed after the warm-up")
    parser.add_argument("--schemes", default="ucx,tcp", help="comma-separated, in order")
    parser.add_argument("--array", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = parser.parse_args(argv)
    os.environ.setdefault("UCX_TLS", "tcp,self,sm")
    records = []
    for scheme in args.schemes.split(","):
        record = run(scheme, args.bytes, args.repeats, array=args.array)
        records.append(record)
        runs = ", ".join(f"{s:.3f}" for s in record["runs_s"])
        print(
            f"{scheme:>4} {args.array}: {record['mb_per_s']:8.0f} MB/s  "
            f"({args.bytes / 1e6:.0f} MB; runs {runs} s; warm-up {record['warmup_s']:.3f} s)",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
