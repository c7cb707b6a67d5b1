"""Spill throughput: GB/s a worker's store writes to disk and reads back,
trioclust's :class:`~trioclust.runtime.spill.SpillStore` against Dask's
``distributed.spill.SpillBuffer`` in the same run, on the same directory.

Each round stores ``--count`` numpy arrays of ``--mib`` MiB, made fresh and
dropped once stored, into a store whose memory target is 0 bytes (so every
value goes straight to disk: pickled, written), then reads every one back
(read, unpickled), checks it and deletes it (the deletes count as reading). The
systems alternate round by round, so that a busy machine's noise falls on
both; the median of ``--rounds`` is reported, with the spread (min-max).
Bytes written per second count the arrays' bytes, not the files'.

    .venv-bench/bin/python benchmarks/spill_throughput.py [--mib 16] [--count 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trioclust.runtime.spill import SpillStore


def trioclust_store(directory: str) -> tuple[MutableMapping[Any, Any], Callable[[], None]]:
    store = SpillStore(0, directory)
    return store, store.close


def dask_store(directory: str) -> tuple[MutableMapping[Any, Any], Callable[[], None]]:
    from distributed.spill import SpillBuffer

    buffer = SpillBuffer(tempfile.mkdtemp(dir=directory), target=0)
    return buffer, buffer.clear


def one_round(make: Callable[[str], Any], mib: int, count: int, directory: str) -> tuple[float, float]:
    """Write ``count`` fresh arrays, then read them back. Nothing else holds
    the arrays once stored: Dask's buffer keeps weak references to values it
    spilled and would hand a live one back without reading the disk."""
    store, close = make(directory)
    n = mib * 2**20 // 8
    try:
        written = 0.0
        for i in range(count):
            value = np.full(n, float(i))
            start = time.perf_counter()
            store[f"k{i}"] = value
            written += time.perf_counter() - start
            del value
        start = time.perf_counter()
        for i in range(count):
            got = store[f"k{i}"]
            assert got.shape == (n,)
            assert got[-1] == float(i)
            del got
            del store[f"k{i}"]  # keep nothing in memory between reads
        read = time.perf_counter() - start
        nbytes = count * n * 8
        return nbytes / written / 1e9, nbytes / read / 1e9
    finally:
        close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--directory", default=None)
    args = parser.parse_args()
    systems: dict[str, Any] = {"trioclust": trioclust_store}
    try:
        import distributed  # noqa: F401

        systems["dask"] = dask_store
    except ImportError:
        print("dask.distributed is not installed: trioclust alone", file=sys.stderr)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    root = tempfile.mkdtemp(prefix="spill-bench-", dir=args.directory)
    try:
        for _ in range(args.rounds):
            for name, make in systems.items():
                results[name].append(one_round(make, args.mib, args.count, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, rounds in results.items():
        writes = [w for w, _ in rounds]
        reads = [r for _, r in rounds]
        print(json.dumps({
            "system": name, "value_mib": args.mib, "values": args.count,
            "write_gbps": round(statistics.median(writes), 3),
            "write_spread": [round(min(writes), 3), round(max(writes), 3)],
            "read_gbps": round(statistics.median(reads), 3),
            "read_spread": [round(min(reads), 3), round(max(reads), 3)],
        }))


if __name__ == "__main__":
    main()
