"""The graph view's data: the scheduler's current tasks as nodes and edges.

A graph of up to ``limit`` tasks is sent whole: one node per task (its key,
prefix, state and depth) and one edge per dependency. A larger one is
aggregated by key prefix, so the page stays responsive at any size: one node
per prefix with how many of its tasks are in each state, and one edge per
pair of prefixes that depend on each other, with how many task edges it
stands for. Either way, ``depth`` is the length of the longest chain of
dependencies below a node (a prefix takes its tasks' smallest), which the
page uses as the column to draw it in.

It walks every task: the app computes it through ``snapshot.Throttled``.
"""

from __future__ import annotations

from typing import Any

from trioclust.core.keys import Key, key_str
from trioclust.core.scheduler_tasks import TASK_STATES
from trioclust.dashboard.snapshot import SchedulerView
from trioclust.dashboard.task_stream import key_prefix

__all__ = ["graph"]


def graph(scheduler: SchedulerView, limit: int = 500) -> dict[str, Any]:
    """The current task graph, per task or (beyond ``limit`` tasks) per prefix.

    Returns:
        ``{"mode": "tasks" | "prefixes", "ntasks": n, "nodes": [...], "edges": [...]}``:
        task nodes ``{"id", "prefix", "state", "depth"}`` and edges ``[from, to]``;
        prefix nodes ``{"id", "count", "depth", "<state>": n, ...}`` and edges
        ``[from, to, count]``.
    """
    tasks = scheduler.state.tasks
    depth: dict[Key, int] = {}
    for key, ts in tasks.items():  # creation order: dependencies come first
        depth[key] = 1 + max((depth.get(d.key, 0) for d in ts.dependencies), default=-1)
    if len(tasks) <= limit:
        return {
            "mode": "tasks",
            "ntasks": len(tasks),
            "nodes": [
                {"id": key_str(key), "prefix": key_prefix(key), "state": ts.state, "depth": depth[key]}
                for key, ts in tasks.items()
            ],
            "edges": [
                [key_str(d.key), key_str(key)]
                for key, ts in tasks.items() for d in ts.dependencies if d.key in tasks
            ],
        }
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str], int] = {}
    for key, ts in tasks.items():
        prefix = key_prefix(key)
        node = nodes.get(prefix)
        if node is None:
            node = nodes[prefix] = {
                "id": prefix, "count": 0, "depth": depth[key], **dict.fromkeys(TASK_STATES, 0)
            }
        node["count"] += 1
        node[ts.state] = node.get(ts.state, 0) + 1
        node["depth"] = min(node["depth"], depth[key])
        for d in ts.dependencies:
            source = key_prefix(d.key)
            if source != prefix:
                edges[(source, prefix)] = edges.get((source, prefix), 0) + 1
    return {
        "mode": "prefixes",
        "ntasks": len(tasks),
        "nodes": list(nodes.values()),
        "edges": [[a, b, n] for (a, b), n in edges.items()],
    }
