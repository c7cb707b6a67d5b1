"""Adding a graph's new tasks: linking them, and finding those that can never run."""

# Theory of operation
# ===================
#
# A client's graph arrives as ``NewTask`` records naming their dependencies by
# key. ``link_new_tasks`` turns the names into links between ``TaskState``
# objects (both directions) and singles out the tasks that can never run, so
# the scheduler errs them at once instead of leaving the client waiting:
#   - a dependency that is neither in the graph nor known to the scheduler
#     (typically a future released before the graph referring to it arrived);
#   - a task that depends on itself, or on a dependency cycle.
# Known tasks never gain dependencies, so a cycle can only run through new
# tasks: peeling the new tasks off in topological order (Kahn's algorithm)
# leaves exactly the ones in a cycle or downstream of one. That costs
# O(tasks + dependencies) and nothing at all for a graph of independent tasks.
# Those tasks are unlinked, so that a cycle does not keep itself alive.

from __future__ import annotations

from collections.abc import Mapping

from trioclust.core.events import NewTask
from trioclust.core.keys import Key
from trioclust.core.scheduler_tasks import SmallSets, TaskState

__all__ = ["link_new_tasks"]


def link_new_tasks(
    tasks: Mapping[Key, TaskState],
    new: list[TaskState],
    specs: Mapping[Key, NewTask],
    sets: SmallSets,
) -> dict[TaskState, None]:
    """Link new tasks to their dependencies and find those that can never run.

    Args:
        tasks: Every task the scheduler knows, the new ones included.
        new: The tasks just created for this graph, in submission order.
        specs: The graph's ``NewTask`` records, by key.
        sets: Interns the ``dependencies`` tuples (the 10,000 tasks of a
            ``map`` over one future share one).

    Returns:
        The tasks that can never run (ordered), their exception already set.
    """
    bad: dict[TaskState, None] = {}
    for ts in new:
        deps: dict[TaskState, None] = {}
        for dep_key in specs[ts.key].dependencies:
            dts = tasks.get(dep_key)
            if dts is not None and dts is not ts:
                if dts not in deps:
                    deps[dts] = None
                    dts.link_dependent(ts)
            elif ts not in bad:
                exc = ValueError(
                    f"{ts.key!r} depends on itself"
                    if dts is ts
                    else f"dependency {dep_key!r} of {ts.key!r} is not known to the "
                    f"scheduler (was its future released?)"
                )
                ts.set_exception(exc, None, str(exc), ts.key)
                bad[ts] = None
        if deps:
            ts.dependencies = sets.tuple(tuple(deps))
    # Cycles can only run through new tasks: peel them off in topological
    # order (Kahn); whatever is left is in a cycle or downstream of one.
    is_new = set(new)
    blocked: dict[TaskState, int] = {}
    for ts in new:
        n = 0
        for dep in ts.dependencies:
            if dep in is_new:
                n += 1
        if n:
            blocked[ts] = n
    if blocked:
        free = [ts for ts in new if ts not in blocked]
        while free:
            for dts in free.pop().dependents:
                left = blocked.get(dts)
                if left == 1:
                    del blocked[dts]
                    free.append(dts)
                elif left is not None:
                    blocked[dts] = left - 1
        for ts in blocked:
            # Unlinked, so that the cycle does not keep itself alive.
            for dep in ts.dependencies:
                dep.dependents.pop(ts, None)
            ts.dependencies = ()
            if ts not in bad:
                exc = ValueError(f"{ts.key!r} is part of, or depends on, a dependency cycle")
                ts.set_exception(exc, None, str(exc), ts.key)
                bad[ts] = None
    return bad
