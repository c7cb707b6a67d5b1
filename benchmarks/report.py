"""The results as one table (scenario, trioclust, dask, ratio, target, verdict) and as JSON.

``ratio`` is always "how many times better trioclust is": dask / trioclust for
times and bytes, trioclust / dask for rates. Above 1 trioclust is ahead.
A verdict is ``pass`` or ``FAIL`` against the issue's target, ``-`` for a row
without a target, and ``n/a`` where a figure it needs is missing (not run, or
``--no-dask``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Results = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    trioclust: float | None
    dask: float | None
    ratio: float | None
    target: str
    verdict: str


def _get(results: Results, *path: str) -> Any:
    node: Any = results
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, int | float) else None


def _ratio(trioclust: float | None, dask: float | None, *, higher_is_better: bool) -> float | None:
    if trioclust is None or dask is None or trioclust == 0 or dask == 0:
        return None
    return trioclust / dask if higher_is_better else dask / trioclust


def _verdict(*checks: bool | None) -> str:
    if any(check is None for check in checks):
        return "n/a"
    return "pass" if all(checks) else "FAIL"


def _check(fn: Callable[..., bool], *values: float | None) -> bool | None:
    """``fn(*values)``, or None when a value is missing."""
    return None if any(v is None for v in values) else fn(*values)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def build_rows(results: Results, n_workers: int) -> list[Row]:
    rows: list[Row] = []

    def add(name: str, t: float | None, d: float | None, *, higher: bool, target: str = "",
            checks: tuple[bool | None, ...] = ()) -> None:
        ratio = _ratio(t, d, higher_is_better=higher)
        rows.append(Row(name, t, d, ratio, target or "-", _verdict(*checks) if checks else "-"))

    # a: cluster start and close
    if "a" in results:
        t, d = _get(results, "a", "trioclust", "start_s"), _get(results, "a", "dask", "start_s")
        add(f"a  start {n_workers} workers (s)", t, d, higher=False)
        t, d = _get(results, "a", "trioclust", "close_s"), _get(results, "a", "dask", "close_s")
        add("a  close (s)", t, d, higher=False)
        t, d = _get(results, "a", "trioclust", "total_s"), _get(results, "a", "dask", "total_s")
        add("a  start + close (s)", t, d, higher=False, target="<= dask",
            checks=(_check(lambda t, d: t <= d, t, d),))

    ping = _get(results, "h", "raw", "ping_pong", "median_us")
    bulk_gbs = _get(results, "h", "raw", "bulk", "gb_per_s")

    # b: round trips
    if "b" in results:
        t, d = _get(results, "b", "trioclust", "median_us"), _get(results, "b", "dask", "median_us")
        raw = f"{fmt(5 * ping)} us" if ping is not None else "raw n/a"
        add("b  submit().result() median (us)", t, d, higher=False,
            target=f"<= dask/15; <= 5x raw ping-pong ({raw})",
            checks=(_check(lambda t, d: t <= d / 15, t, d), _check(lambda t, p: t <= 5 * p, t, ping)))
        t, d = _get(results, "b", "trioclust", "p99_us"), _get(results, "b", "dask", "p99_us")
        add("b  submit().result() p99 (us)", t, d, higher=False)

    # c: gather(map)
    if "c" in results:
        for n in sorted({int(k) for system in results["c"].values() for k in system if k.isdigit()}):
            t = _get(results, "c", "trioclust", str(n), "tasks_per_s")
            d = _get(results, "c", "dask", str(n), "tasks_per_s")
            inf = _get(results, "c", "dask-saturation-inf", str(n), "tasks_per_s")
            add(f"c  gather(map) N={n:,} (tasks/s), dask defaults", t, d, higher=True,
                target=">= 10x", checks=(_check(lambda t, d: t >= 10 * d, t, d),))
            add(f"c  gather(map) N={n:,} (tasks/s), dask saturation inf", t, inf, higher=True,
                target=">= 4x", checks=(_check(lambda t, i: t >= 4 * i, t, inf),))

    # d: tree reduction
    if "d" in results:
        t, d = _get(results, "d", "trioclust", "seconds"), _get(results, "d", "dask", "seconds")
        tasks = (results["d"].get("trioclust") or results["d"].get("dask") or {}).get("tasks", 0)
        add(f"d  tree reduction, {tasks:,} tasks (s)", t, d, higher=False, target=">= 5x",
            checks=(_check(lambda t, d: d >= 5 * t, t, d),))

    # e: worker-to-worker transfer
    if "e" in results:
        t, d = _get(results, "e", "trioclust", "mb_per_s"), _get(results, "e", "dask", "mb_per_s")
        nbytes = (results["e"].get("trioclust") or results["e"].get("dask") or {}).get("bytes", 0)
        raw = f"{fmt(0.8 * bulk_gbs * 1000)} MB/s" if bulk_gbs is not None else "raw n/a"
        add(f"e  {nbytes / 1e6:.0f} MB worker A -> B (MB/s)", t, d, higher=True,
            target=f">= dask; >= 80% raw bulk ({raw})",
            checks=(_check(lambda t, d: t >= d, t, d),
                    _check(lambda t, b: t >= 0.8 * b * 1000, t, bulk_gbs)))

    # f: scheduler memory per pending task
    if "f" in results:
        t = _get(results, "f", "trioclust", "bytes_per_task")
        d = _get(results, "f", "dask", "bytes_per_task")
        n = (results["f"].get("trioclust") or results["f"].get("dask") or {}).get("tasks", 0)
        add(f"f  scheduler bytes per pending task ({n:,})", t, d, higher=False,
            target="<= dask/3", checks=(_check(lambda t, d: t <= d / 3, t, d),))

    # g: asyncio
    if "g" in results:
        trio_lat = _get(results, "g", "trioclust", "trio", "latency", "median_us")
        sync_lat = _get(results, "g", "trioclust", "sync", "latency", "median_us")
        t = _get(results, "g", "trioclust", "asyncio", "latency", "median_us")
        d = _get(results, "g", "dask", "asyncio", "latency", "median_us")
        add("g  asyncio: await submit() median (us)", t, d, higher=False,
            target=f"<= 1.2x trio ({fmt(trio_lat)} us; sync {fmt(sync_lat)} us)",
            checks=(_check(lambda t, r: t <= 1.2 * r, t, trio_lat),))
        add("g  trio:    await submit() median (us)", trio_lat, None, higher=False)
        maps = (results["g"].get("trioclust") or {}).get("asyncio", {}).get("map", {})
        for key in sorted((k for k in maps if k.isdigit()), key=int):
            n = int(key)
            trio_rate = _get(results, "g", "trioclust", "trio", "map", key, "tasks_per_s")
            sync_rate = _get(results, "g", "trioclust", "sync", "map", key, "tasks_per_s")
            t = _get(results, "g", "trioclust", "asyncio", "map", key, "tasks_per_s")
            d = _get(results, "g", "dask", "asyncio", "map", key, "tasks_per_s")
            add(f"g  asyncio: gather(map) N={n:,} (tasks/s)", t, d, higher=True,
                target=f">= trio/1.2 ({fmt(trio_rate)}; sync {fmt(sync_rate)})",
                checks=(_check(lambda t, r: t >= r / 1.2, t, trio_rate),))
            add(f"g  trio:    gather(map) N={n:,} (tasks/s)", trio_rate, None, higher=True)

    # h: the raw limits
    if "h" in results:
        add("h  raw trio ping-pong, 16 B (us)", ping, None, higher=False)
        add("h  raw batched small messages (msg/s)",
            _get(results, "h", "raw", "batched", "messages_per_s"), None, higher=True)
        add("h  raw bulk into a reused buffer (GB/s)", bulk_gbs, None, higher=True)
        add("h  raw thread ping-pong, threading.Event (us)",
            _get(results, "h", "raw", "thread_ping_pong", "median_us"), None, higher=False)
        add("h  raw thread <-> trio loop ping-pong (us)",
            _get(results, "h", "raw", "loop_ping_pong", "median_us"), None, higher=False)
        add("h  b's hand-off floor: 2 ping-pong + 1.5 thread (us)",
            _get(results, "h", "raw", "handoff_floor_us"), None, higher=False)

    # i: scenario e over ucx:// against tcp:// (trioclust only)
    if "i" in results:
        record = results["i"].get("trioclust") or {}
        if "skipped" in record:
            rows.append(Row("i  A -> B over ucx://", None, None, None, f"skipped: {record['skipped']}", "-"))
        else:
            u, t = _get(results, "i", "trioclust", "ucx", "mb_per_s"), _get(results, "i", "trioclust", "tcp", "mb_per_s")
            nbytes = (record.get("ucx") or {}).get("bytes", 0)
            share = f"{u / t:.2f}x tcp" if u is not None and t else "n/a"
            add(f"i  {nbytes / 1e6:.0f} MB A -> B, ucx:// (MB/s)", u, None, higher=True,
                target=f"tcp:// in the same run: {fmt(t)} MB/s; ucx = {share}")

    # j: dask collections
    if "j" in results:
        _collection_rows(results, add)
    return rows


def _collection_rows(results: Results, add: Callable[..., None]) -> None:
    record = results["j"].get("trioclust") or results["j"].get("dask") or {}

    def both(*path: str) -> tuple[float | None, float | None]:
        return _get(results, "j", "trioclust", *path), _get(results, "j", "dask", *path)

    def times(name: str, path: tuple[str, ...], factor: float, target: str) -> None:
        t, d = both(*path)
        add(name, t, d, higher=False, target=target,
            checks=(_check(lambda t, d: d >= factor * t, t, d),))

    small, big = record.get("array_small_chunks", {}), record.get("array_big_chunks", {})
    times(f"j1 da.ones({small.get('shape', 0):,}^2, chunks={small.get('chunk', 0)}).sum() (s)",
          ("array_small_chunks", "seconds"), 4, ">= 4x")
    times(f"j2 the same, chunks={big.get('chunk', 0):,} (s)",
          ("array_big_chunks", "seconds"), 1, ">= dask")
    frame = record.get("dataframe", {})
    shape = f"{frame.get('rows', 0):,} rows / {frame.get('partitions', 0)}"
    times(f"j3 groupby-mean, {shape} (s)", ("dataframe", "groupby_mean", "seconds"), 1.5, ">= 1.5x")
    times(f"j3 set_index shuffle, {shape} (s)", ("dataframe", "set_index", "seconds"), 1.5, ">= 1.5x")
    tasks = record.get("delayed", {}).get("tasks", 0)
    times(f"j4 dask.delayed tree, {tasks:,} tasks (s)", ("delayed", "seconds"), 4, ">= 4x")
    t, d = both("delayed", "bytes_per_task")
    add("j4 scheduler bytes per task", t, d, higher=False, target="<= dask/3",
        checks=(_check(lambda t, d: t <= d / 3, t, d),))


def table(rows: list[Row]) -> str:
    """A Markdown table, readable as plain text too."""
    header = ("scenario", "trioclust", "dask", "ratio", "target", "verdict")
    body = [
        (r.scenario, fmt(r.trioclust), fmt(r.dask),
         f"{r.ratio:.2f}x" if r.ratio is not None else "-", r.target, r.verdict)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {1, 2, 3}

    def line(cells: tuple[str, ...]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(b) for b in body)])


def as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
