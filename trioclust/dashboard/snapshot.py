"""The data the dashboard shows, read from a running scheduler as plain JSON values.

Everything here only reads: the scheduler's state (``state.tasks``,
``state.workers``), the metrics its workers send with their heartbeats
(``worker_metrics``) and the dashboard's own :class:`TaskStream`. Each
function returns dicts, lists, strings and numbers, ready for ``json.dumps``
and for the page's script.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar, cast

from trioclust.core.keys import Key, key_str
from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.scheduler_tasks import TASK_STATES
from trioclust.dashboard.task_stream import TaskRecord, TaskStream, key_prefix

__all__ = [
    "PrefixMemo",
    "SchedulerView",
    "Throttled",
    "dumps",
    "finished_json",
    "progress",
    "spans",
    "status",
    "status_json",
    "status_parts",
    "task_counts",
    "task_stream",
    "task_stream_json",
    "workers",
]


T = TypeVar("T")


class SchedulerView(Protocol):
    """What the dashboard reads from a scheduler (``trioclust.Scheduler`` has it all)."""

    id: str
    address: str
    state: SchedulerState
    worker_metrics: dict[str, dict[str, Any]]
    client_links: Any


def _number(value: Any) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return 0.0
    return result if result == result and abs(result) != float("inf") else 0.0


def workers(scheduler: SchedulerView) -> list[dict[str, Any]]:
    """One entry per connected worker, ordered by name then address."""
    out = []
    for address, info in scheduler.state.workers.items():
        metrics = scheduler.worker_metrics.get(address, {})
        out.append(
            {
                "address": address,
                "name": info.name,
                "nthreads": info.nthreads,
                "memory": int(_number(metrics.get("memory"))),
                "cpu": _number(metrics.get("cpu")),
                "memory_limit": info.memory_limit,
                "processing": len(info.processing),
                "executing": int(_number(metrics.get("executing"))),
                "stored": len(info.has_what),
                "nbytes": info.nbytes_stored,
                # results in memory: those stored less those the worker last
                # said it spilled to disk (heartbeat)
                "managed": max(info.nbytes_stored - int(_number(metrics.get("spilled"))), 0),
                "spilled": int(_number(metrics.get("spilled"))),
                "last_seen": _number(metrics.get("time")),
            }
        )
    out.sort(key=lambda w: (str(w["name"]), str(w["address"])))
    return out


def task_counts(scheduler: SchedulerView) -> dict[str, int]:
    """How many tasks are in each state, every state listed (zeros included)."""
    counts = scheduler.state.tasks_by_state()
    return {state: counts.get(state, 0) for state in TASK_STATES}


_state_of = attrgetter("state")
_seq_of = attrgetter("seq")


class PrefixMemo:
    """``key_prefix``, remembered across calls.

    A dashboard poll reads the prefix of every task the scheduler holds
    (:func:`progress`) and of every new run (:func:`spans`), about a
    microsecond each on a small machine; the server keeps one memo for both.
    :func:`progress` trims it: it is emptied when it holds more than twice
    the tasks held and 1,024 more, so it keeps the keys of forgotten tasks
    at most until then.
    """

    __slots__ = ("_prefixes",)

    def __init__(self) -> None:
        self._prefixes: dict[Key, str] = {}

    def __call__(self, key: Key) -> str:
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = key_prefix(key)
        return prefix

    def __len__(self) -> int:
        return len(self._prefixes)

    def all(self, keys: list[Key]) -> list[str]:
        """The prefixes of ``keys``, in order (looked up in C; only the new computed)."""
        found: list[str | None] = list(map(self._prefixes.get, keys))
        if None in found:
            for i in [i for i, prefix in enumerate(found) if prefix is None]:
                found[i] = self._prefixes[keys[i]] = key_prefix(keys[i])
        return cast(list[str], found)  # no None left

    def trim(self, held: int) -> None:
        """Forget every key when there are more than ``2 * held + 1024``."""
        if len(self._prefixes) > 2 * held + 1024:
            self._prefixes.clear()


def progress(
    scheduler: SchedulerView, limit: int | None = None, prefixes: PrefixMemo | None = None
) -> list[dict[str, Any]]:
    """Per key prefix, how many of its tasks are in each state.

    Args:
        scheduler: The scheduler to read.
        limit: At most this many prefixes (all if None): those with
            unfinished work first, then the most recently submitted.
        prefixes: The server's memo of prefixes, trimmed here to the tasks held.

    Returns:
        ``[{"prefix": ..., "total": n, "<state>": n, ...}, ...]``, every state
        of ``TASK_STATES`` present.
    """
    tasks = scheduler.state.tasks
    memo = PrefixMemo() if prefixes is None else prefixes
    memo.trim(len(tasks))
    # counted in C (map, zip, Counter) rather than task by task in Python:
    # for 10,000 tasks whose prefixes are remembered, about 1.4 ms here; a
    # task not seen before still costs its key_prefix (about a microsecond)
    names = memo.all(list(tasks))
    counts = Counter(zip(names, map(_state_of, tasks.values()), strict=True))
    # the tasks dict is in creation order: the last seq seen per prefix is its newest
    newest = dict(zip(names, map(_seq_of, tasks.values()), strict=True))
    groups: dict[str, dict[str, Any]] = {}
    for (prefix, state), n in counts.items():
        group = groups.get(prefix)
        if group is None:
            group = groups[prefix] = {"prefix": prefix, "total": 0, **dict.fromkeys(TASK_STATES, 0)}
        group["total"] += n
        group[state] = group.get(state, 0) + n

    def order(prefix: str) -> tuple[bool, int]:
        group = groups[prefix]
        done = group["memory"] + group["erred"] + group["released"] == group["total"]
        return (done, -newest[prefix])

    return [groups[p] for p in sorted(groups, key=order)[:limit]]


class Throttled(Generic[T]):
    """Calls ``fn`` at most about once per ``min_interval`` seconds, and spends
    at most about ``1 / (1 + slack)`` of the time in it: a result that took
    ``t`` seconds to compute is reused for ``slack * t`` seconds.

    The dashboard runs on the scheduler's event loop; this keeps a page that
    polls a graph of millions of tasks from slowing the scheduler down.

    Args:
        fn: Computes the value.
        min_interval: Reuse a value at least this long, seconds.
        slack: How many times its cost a value is reused.
        clock: A monotonic clock, in seconds (for tests).
    """

    def __init__(
        self,
        fn: Callable[[], T],
        min_interval: float = 0.0,
        slack: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._fn = fn
        self._min_interval = min_interval
        self._slack = slack
        self._clock = clock
        self._value: T | None = None
        self._fresh_until = -math.inf

    def __call__(self) -> T:
        now = self._clock()
        if self._value is None or now >= self._fresh_until:
            self._value = self._fn()
            done = self._clock()
            self._fresh_until = done + max(self._min_interval, self._slack * (done - now))
        return self._value


def _record(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "key": key_str(record.key),
        "prefix": record.prefix,
        "worker": record.worker,
        "sent": record.sent,
        "start": record.start,
        "stop": record.stop,
        "status": record.status,
        "thread": record.thread,
        "timed": record.timed,
    }


_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def finished_json(stream: TaskStream, n: int | None = None, since: int = 0) -> str:
    """The finished runs of :func:`task_stream`, as the text of a JSON array.

    The same entries as ``[_record(r) for r in stream.recent(n, since=since)]``
    dumped, built straight from the stream's rows: no record object and no
    dict per run, and each worker's address and prefix escaped once. This
    is what a dashboard poll spends most of its time on (up to
    ``dashboard.page-stream-length`` runs when the page falls behind).
    """
    parts = []
    workers: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for rid, key, worker, sent, start, stop, status, thread, _, _, timed in stream.rows(n, since=since):
        w = workers.get(worker)
        if w is None:
            w = workers[worker] = _encode_str(worker)
        text = key if type(key) is str else key_str(key)
        prefix = key_prefix(key)
        p = prefixes.get(prefix)
        if p is None:
            p = prefixes[prefix] = _encode_str(prefix)
        parts.append(
            f'{{"id":{rid},"key":{_encode_str(text)},"prefix":{p},"worker":{w},'
            f'"sent":{float(sent)!r},"start":{float(start)!r},"stop":{float(stop)!r},'
            f'"status":"{status}","thread":{int(thread)},"timed":{"true" if timed else "false"}}}'
        )
    return "[" + ",".join(parts) + "]"


def _running(stream: TaskStream) -> list[dict[str, Any]]:
    return [
        {"key": key_str(key), "prefix": key_prefix(key), "worker": worker, "sent": sent, "start": start}
        for key, worker, sent, start in stream.running()
    ]


#: How many of the newest runs a document of spans also carries in full
#: (the page's table of recent runs).
RECENT_RUNS = 12


def spans(
    stream: TaskStream, since: int = 0, resolution: float = 0.0, limit: int | None = None,
    prefixes: PrefixMemo | None = None,
) -> list[dict[str, Any]]:
    """The finished runs newer than ``since``, runs in a row merged into spans.

    On each worker thread, a run joins the span before it when it has the
    same key prefix and outcome and starts within ``resolution`` seconds of
    that span's stop. The page asks with ``resolution`` set to the seconds
    one pixel of its task stream covers: a stream of short tasks (thousands
    a second) then comes as a few spans per poll, drawn as what a pixel can
    show, rather than as every run, most of them narrower than a pixel.
    Every run kept is read (``dashboard.task-stream-length`` at most), so
    the picture has no gaps when the page polls less often than runs end.

    Args:
        stream: The recorder.
        since: Only runs with a greater ``id``.
        resolution: Seconds; 0 merges only runs that touch.
        limit: At most this many spans, the newest.
        prefixes: The server's memo of prefixes (see :class:`PrefixMemo`).

    Returns:
        Per span, oldest first: ``worker``, ``thread``, ``prefix``,
        ``status``, ``start``, ``stop`` and ``count`` (the runs merged).
    """
    out: list[list[Any]] = []
    last: dict[tuple[str, int], list[Any]] = {}  # (worker, thread) -> its newest span
    prefix_of = key_prefix if prefixes is None else prefixes
    for _, key, worker, _, start, stop, status, thread, _, _, _ in stream.rows(since=since):
        prefix = prefix_of(key)
        span = last.get((worker, thread))
        if (
            span is not None and span[2] == prefix and span[3] == status
            and span[5] - resolution <= start <= span[5] + resolution
        ):
            if stop > span[5]:
                span[5] = stop
            span[6] += 1
        else:
            span = last[(worker, thread)] = [worker, thread, prefix, status, start, stop, 1]
            out.append(span)
    if limit is not None:
        out = out[-limit:] if limit else []
    fields = ("worker", "thread", "prefix", "status", "start", "stop", "count")
    return [dict(zip(fields, span, strict=True)) for span in out]


def task_stream_json(
    stream: TaskStream, n: int | None = None, since: int = 0, resolution: float | None = None,
    prefixes: PrefixMemo | None = None,
) -> str:
    """:func:`task_stream` as JSON text, its finished runs built by :func:`finished_json`.

    With a ``resolution``, the runs come as ``"spans"`` (see :func:`spans`,
    at most ``n``) and the newest :data:`RECENT_RUNS` of them in full as
    ``"recent"``, in place of ``"finished"``.
    """
    rest = _dumps({"running": _running(stream), "totals": stream.totals, "last_id": stream.last_id})
    if resolution is None:
        return '{"finished":' + finished_json(stream, n, since) + "," + rest[1:]
    return (
        '{"spans":' + _dumps(spans(stream, since, resolution, n, prefixes))
        + ',"recent":' + finished_json(stream, RECENT_RUNS, since) + "," + rest[1:]
    )


def task_stream(stream: TaskStream, n: int | None = None, since: int = 0) -> dict[str, Any]:
    """The newest finished runs, the runs under way and the totals.

    A run under way has ``"start": null`` while it waits in its worker's queue.

    Args:
        stream: The recorder.
        n: At most this many finished runs (the newest).
        since: Only finished runs with a greater ``id``.
    """
    return {
        "finished": [_record(r) for r in stream.recent(n, since=since)],
        "running": _running(stream),
        "totals": dict(stream.totals),
        "last_id": stream.last_id,
    }


def status_parts(
    scheduler: SchedulerView, progress_rows: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """:func:`status` without its ``task_stream``: the part that does not
    depend on what the reader already has, so it can be shared by readers."""
    ws = workers(scheduler)
    return {
        "now": time.time(),
        "scheduler": {
            "id": scheduler.id,
            "address": scheduler.address,
            "pid": os.getpid(),
            "clients": len(scheduler.client_links),
        },
        "workers": ws,
        "totals": {
            "workers": len(ws),
            "nthreads": sum(w["nthreads"] for w in ws),
            "memory": sum(w["memory"] for w in ws),
            "memory_limit": sum(w["memory_limit"] for w in ws),
            "nbytes": sum(w["nbytes"] for w in ws),
            "tasks": len(scheduler.state.tasks),
        },
        "tasks": task_counts(scheduler),
        "progress": progress(scheduler, 50) if progress_rows is None else progress_rows,
    }


def status(
    scheduler: SchedulerView,
    stream: TaskStream,
    *,
    stream_length: int,
    since: int = 0,
    progress_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the ``/status`` page draws, in one document.

    Args:
        scheduler: The scheduler to read.
        stream: The task stream recorder.
        stream_length: At most this many finished runs (the newest).
        since: Only finished runs with a greater ``id`` (the page sends the
            last one it has, so each poll carries only what is new).
        progress_rows: :func:`progress` as computed by the caller (a cached
            value); computed here, 50 prefixes, if None.
    """
    doc = status_parts(scheduler, progress_rows)
    doc["task_stream"] = task_stream(stream, stream_length, since)
    return doc


def status_json(
    scheduler: SchedulerView,
    stream: TaskStream,
    *,
    stream_length: int,
    since: int = 0,
    progress_rows: list[dict[str, Any]] | None = None,
    parts: str | None = None,
    resolution: float | None = None,
    prefixes: PrefixMemo | None = None,
) -> str:
    """:func:`status` as JSON text, as ``/json/status`` serves it.

    The same document, built without a dict per finished run (see
    :func:`finished_json`); the arguments are :func:`status`'s, and
    ``parts``, when given, :func:`status_parts` already dumped (shared by
    the readers of one moment). With a ``resolution`` (seconds, what the
    page sends), the task stream's runs come merged into spans: see
    :func:`task_stream_json`; ``prefixes`` is the server's memo (see
    :class:`PrefixMemo`).
    """
    if parts is None:
        parts = _dumps(status_parts(scheduler, progress_rows))
    stream_text = task_stream_json(stream, stream_length, since, resolution, prefixes)
    return parts[:-1] + ',"task_stream":' + stream_text + "}"


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (what the dashboard's JSON responses hold)."""
    return _dumps(value)
