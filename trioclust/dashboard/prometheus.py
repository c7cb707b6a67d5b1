"""``/metrics``: the scheduler's numbers in Prometheus' text exposition format (0.0.4).

Each metric is a ``# HELP`` line, a ``# TYPE`` line, then one sample per line,
``name{label="value",...} number``. Gauges say how things are now (workers,
tasks by state, bytes held); counters only grow (``*_total``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from trioclust.dashboard import snapshot
from trioclust.dashboard.snapshot import SchedulerView
from trioclust.dashboard.task_stream import TaskStream

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
    return "\n".join(lines) + "\n"
