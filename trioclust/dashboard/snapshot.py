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
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from trioclust.core.keys import key_str
from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.scheduler_tasks import TASK_STATES
from trioclust.dashboard.task_stream import TaskRecord, TaskStream, key_prefix

__all__ = [
    "SchedulerView",
    "Throttled",
    "dumps",
    "finished_json",
    "progress",
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


def progress(scheduler: SchedulerView, limit: int | None = None) -> list[dict[str, Any]]:
    """Per key prefix, how many of its tasks are in each state.

    Args:
        scheduler: The scheduler to read.
        limit: At most this many prefixes (all if None): those with
            unfinished work first, then the most recently submitted.

    Returns:
        ``[{"prefix": ..., "total": n, "<state>": n, ...}, ...]``, every state
        of ``TASK_STATES`` present.
    """
    groups: dict[str, dict[str, Any]] = {}
    newest: dict[str, int] = {}
    for ts in scheduler.state.tasks.values():
        prefix = key_prefix(ts.key)
        group = groups.get(prefix)
        if group is None:
            group = groups[prefix] = {"prefix": prefix, "total": 0, **dict.fromkeys(TASK_STATES, 0)}
            newest[prefix] = ts.seq
        group["total"] += 1
        group[ts.state] = group.get(ts.state, 0) + 1
        if ts.seq > newest[prefix]:
            newest[prefix] = ts.seq

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


def task_stream_json(stream: TaskStream, n: int | None = None, since: int = 0) -> str:
    """:func:`task_stream` as JSON text, its finished runs built by :func:`finished_json`."""
    rest = _dumps({"running": _running(stream), "totals": stream.totals, "last_id": stream.last_id})
    return '{"finished":' + finished_json(stream, n, since) + "," + rest[1:]


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
) -> str:
    """:func:`status` as JSON text, as ``/json/status`` serves it.

    The same document, built without a dict per finished run (see
    :func:`finished_json`); the arguments are :func:`status`'s, and
    ``parts``, when given, :func:`status_parts` already dumped (shared by
    the readers of one moment).
    """
    if parts is None:
        parts = _dumps(status_parts(scheduler, progress_rows))
    return parts[:-1] + ',"task_stream":' + task_stream_json(stream, stream_length, since) + "}"


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (what the dashboard's JSON responses hold)."""
    return _dumps(value)
