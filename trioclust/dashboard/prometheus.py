"""``/metrics``: the scheduler's numbers in Prometheus' text exposition format (0.0.4).

Each metric is a ``# HELP`` line, a ``# TYPE`` line, then one sample per line,
``name{label="value",...} number``. Gauges say how things are now (workers,
tasks by state, bytes held); counters only grow (``*_total``).

Two families: ``trioclust_*``, and the names Dask's scheduler exports
(``dask_scheduler_*``) for the quantities trioclust has too, with Dask's
labels, so that existing Prometheus rules and Grafana boards keep working.
Dask's per-prefix counters come from :meth:`TaskStream.prefix_totals`, which
counts from the first scrape on (and the runs still kept at that moment).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from trioclust.dashboard import snapshot
from trioclust.dashboard.snapshot import SchedulerView
from trioclust.dashboard.task_stream import TaskStream, key_prefix

__all__ = ["CONTENT_TYPE", "render_metrics"]

#: The Content-Type Prometheus expects for this format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(float(value))


def _metric(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{label_text}}} {_format_value(value)}" if label_text else f"{name} {_format_value(value)}")
    return lines


def render_metrics(scheduler: SchedulerView, stream: TaskStream) -> str:
    """The text served at ``/metrics``.

    Args:
        scheduler: The scheduler to read.
        stream: The task stream recorder, for the counters.
    """
    ws = snapshot.workers(scheduler)
    lines: list[str] = []
    lines += _metric("trioclust_workers", "gauge", "Workers connected to the scheduler.", [({}, len(ws))])
    lines += _metric(
        "trioclust_clients", "gauge", "Clients connected to the scheduler.",
        [({}, len(scheduler.client_links))],
    )
    lines += _metric(
        "trioclust_threads", "gauge", "Threads of all connected workers.",
        [({}, sum(w["nthreads"] for w in ws))],
    )
    lines += _metric(
        "trioclust_tasks", "gauge", "Tasks the scheduler knows, by state.",
        [({"state": state}, n) for state, n in snapshot.task_counts(scheduler).items()],
    )
    lines += _metric(
        "trioclust_bytes_stored", "gauge", "Bytes of results held on the workers.",
        [({}, sum(w["nbytes"] for w in ws))],
    )
    lines += _metric(
        "dask_worker_memory_bytes", "gauge",
        "Memory of all workers: results in memory, the rest of the processes, results on disk.",
        [
            ({"type": "managed"}, sum(w["managed"] for w in ws)),
            ({"type": "unmanaged"}, sum(max(w["memory"] - w["managed"], 0) for w in ws)),
            ({"type": "spilled"}, sum(w["spilled"] for w in ws)),
        ],
    )
    lines += _metric(
        "trioclust_tasks_completed_total", "counter",
        "Task runs that finished with their result in memory.", [({}, stream.completed)],
    )
    lines += _metric(
        "trioclust_task_runs_total", "counter", "Task runs that ended, by outcome.",
        [({"status": status}, n) for status, n in stream.totals.items()],
    )
    lines += _metric(
        "trioclust_worker_memory_bytes", "gauge", "Resident memory of each worker process.",
        [({"worker": w["address"]}, w["memory"]) for w in ws],
    )
    lines += _metric(
        "trioclust_worker_memory_limit_bytes", "gauge", "Memory limit of each worker (0: none).",
        [({"worker": w["address"]}, w["memory_limit"]) for w in ws],
    )
    lines += _metric(
        "trioclust_worker_processing_tasks", "gauge", "Tasks sent to each worker and not finished.",
        [({"worker": w["address"]}, w["processing"]) for w in ws],
    )
    lines += _metric(
        "trioclust_worker_stored_tasks", "gauge", "Results held by each worker.",
        [({"worker": w["address"]}, w["stored"]) for w in ws],
    )
    lines += _dask_metrics(scheduler, stream, ws)
    return "\n".join(lines) + "\n"


def _dask_metrics(scheduler: SchedulerView, stream: TaskStream, ws: list[dict[str, Any]]) -> list[str]:
    """Dask's ``dask_scheduler_*`` metrics (distributed/http/scheduler/prometheus/core.py)."""
    idle = sum(1 for w in ws if w["processing"] == 0)
    saturated = sum(1 for w in ws if w["processing"] > w["nthreads"])
    leaving: set[str] = getattr(scheduler, "_leaving", set())
    lines: list[str] = []
    lines += _metric(
        "dask_scheduler_clients", "gauge", "Number of clients connected",
        [({}, len(scheduler.client_links))],
    )
    lines += _metric(
        "dask_scheduler_workers", "gauge", "Number of workers known by scheduler",
        [
            ({"state": "idle"}, idle),
            ({"state": "partially_saturated"}, len(ws) - idle - saturated),
            ({"state": "saturated"}, saturated),
            ({"state": "paused"}, 0),
            ({"state": "retiring"}, len(leaving)),
        ],
    )
    lines += _metric(
        "dask_scheduler_workers_added_total", "counter", "Total number of workers added",
        [({}, stream.workers_added)],
    )
    lines += _metric(
        "dask_scheduler_workers_removed_total", "counter", "Total number of workers removed",
        [({}, stream.workers_removed)],
    )
    lines += _metric(
        "dask_scheduler_tasks", "gauge", "Number of tasks known by scheduler",
        [({"state": state}, n) for state, n in snapshot.task_counts(scheduler).items()],
    )
    prefixes = stream.prefix_totals()
    lines += _metric(
        "dask_scheduler_tasks_compute_seconds_total", "counter",
        "Total amount of compute time spent in each prefix",
        [({"task_prefix_name": p}, t["compute_seconds"]) for p, t in prefixes.items()],
    )
    lines += _metric(
        "dask_scheduler_tasks_transfer_seconds_total", "counter",
        "Total amount of transfer time spent in each prefix",
        [({"task_prefix_name": p}, t["transfer_seconds"]) for p, t in prefixes.items()],
    )
    output: dict[str, int] = {}
    for ts in scheduler.state.tasks.values():
        if ts.state == "memory":
            prefix = key_prefix(ts.key)
            output[prefix] = output.get(prefix, 0) + ts.nbytes
    lines += _metric(
        "dask_scheduler_tasks_output_bytes", "gauge",
        "Current number of bytes in memory (without duplicates) for each prefix",
        [({"task_prefix_name": p}, n) for p, n in output.items()],
    )
    lines += _metric(
        "dask_scheduler_prefix_state_totals_total", "counter",
        "Accumulated count of task prefix in each state",
        [
            ({"task_prefix_name": p, "state": state}, t[state])
            for p, t in prefixes.items() for state in ("memory", "erred")
        ],
    )
    return lines
