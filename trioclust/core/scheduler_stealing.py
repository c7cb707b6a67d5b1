"""Work stealing: which queued tasks move from busy workers to hungry ones."""

# Theory of operation
# ===================
#
# Placement is final when a task is sent: a task with dependencies goes where
# its data is, whatever that worker's load, and a worker that joins later gets
# nothing already sent. So queues grow uneven: a worker joins mid-graph, or
# the tasks piled on one worker take longer than its peers'. Stealing evens
# them out, after each ``handle``:
#
# - A *thief* is a worker running fewer than ``2 * nthreads`` tasks: it has a
#   free thread, or no task queued for the next one.
# - A *victim* has more than ``2 * nthreads`` tasks, and more than
#   ``4 * nthreads`` it has not reported as started (``TaskStarted``): those
#   wait in its queue for a thread. Only those move, and never the first
#   ``4 * nthreads`` of them in the order it runs them: their start reports
#   may be on their way (its threads take up to four per thread at once). A
#   task that reported its start never moves. Should a start report still be
#   in flight all the same, the victim's run is cancelled and its result
#   dropped: the task runs twice, but has one result.
# - Each thief, least occupied first, takes tasks until it holds
#   ``2 * nthreads``, each from the victim with the most unstarted tasks
#   beyond its own ``2 * nthreads``, choosing the task that victim would run
#   last (the worst priority) among those the thief may run (restrictions and
#   resources, scheduler_placement.allows).
#
# Stranded tasks
# --------------
# The rule above leaves a short queue alone, and a short queue can wait for
# ever: a task that waits on tasks it launched without seceding (the Futures
# page's ``get_client`` example) holds its worker's only thread, and the
# sub-task placed behind it never runs, while another worker idles. A worker
# whose tasks (seceded ones not counted, held threads counted) outnumber its
# threads by ``w`` has ``w`` of them waiting: first those it has not
# reported started, then, since its threads take tasks in the order it
# reports their start, the ``w`` last it reported: they sit in its thread
# pool's queue (started means handed to the threads). These are *stranded*
# while some accepting worker has a thread free. On each of the runtime's
# steal looks (``StealLook``, ``scheduler.work-stealing-interval`` apart)
# the stranded tasks are noted with when they were first seen so on that
# worker; one still stranded there ``after`` seconds later moves to a worker
# with a free thread, best priority first, least occupied thief first. A
# move that catches the task just as it starts costs a second run, as above.
# In a stream of short tasks a queued task starts within milliseconds, so
# nothing moves; only a wait behind a long task does.
#
# Durations are not estimated: a steal moves a task that would otherwise wait
# behind at least ``2 * nthreads`` others, and a thief has spare threads; the
# dependencies it fetches are the price. ``SchedulerState`` carries a plan out
# by telling the victim to drop the task (``FreeKeys`` with ``cancel``) and
# the thief to compute it (``ComputeTask``).

from __future__ import annotations

from collections.abc import Callable, Mapping

from trioclust.core.keys import Key
from trioclust.core.scheduler_placement import allows
from trioclust.core.scheduler_tasks import TaskState, WorkerInfo

__all__ = ["has_thief", "plan_steals", "plan_stranded"]


def _may_run(ts: TaskState, thief: WorkerInfo) -> bool:
    """Whether ``thief`` may run ``ts`` (its restrictions and resources)."""
    return ts.restrictions is None or allows(ts.restrictions, thief)


def _pipeline(ws: WorkerInfo) -> int:
    """Tasks a worker keeps for its threads: one running and one queued per thread."""
    return 2 * max(ws.nthreads, 1)


def _margin(ws: WorkerInfo) -> int:
    """Unstarted tasks a victim keeps: those it runs next, whose start report
    may be on its way (a worker's threads take up to 4 per thread at once:
    one running, up to ``worker.prefetch-short-tasks`` queued)."""
    return 4 * max(ws.nthreads, 1)


def has_thief(workers: Mapping[str, WorkerInfo], least: WorkerInfo | None) -> bool:
    """Whether stealing is worth a look: two workers, and the least occupied is hungry."""
    return least is not None and len(workers) > 1 and len(least.processing) < _pipeline(least)


def plan_steals(
    workers: Mapping[str, WorkerInfo], tasks: Callable[[Key], TaskState]
) -> list[tuple[TaskState, WorkerInfo]]:
    """The moves that even out the workers' queues: ``(task, thief)`` pairs.

    Args:
        workers: The live workers, by address.
        tasks: Looks a processing task up by key.

    Returns:
        The moves, in order; empty when nothing should move.
    """
    thieves = sorted(
        (ws for ws in workers.values() if len(ws.processing) < _pipeline(ws)),
        key=lambda ws: (ws.occupancy, ws.address),
    )
    if not thieves:
        return []
    # per victim: its unstarted tasks, the one it would run last at the end
    stealable: dict[str, list[TaskState]] = {}
    spare: dict[str, int] = {}
    for ws in workers.values():
        unstarted = len(ws.processing) - ws.nstarted
        extra = min(len(ws.processing) - _pipeline(ws), unstarted - _margin(ws))
        if extra > 0:
            waiting = [ts for ts in map(tasks, ws.processing) if not ts.started]
            waiting.sort(key=lambda ts: (ts.priority, ts.seq))
            stealable[ws.address] = waiting[_margin(ws):]
            spare[ws.address] = extra
    moves: list[tuple[TaskState, WorkerInfo]] = []
    for thief in thieves:
        room = _pipeline(thief) - len(thief.processing)
        while room > 0 and spare:
            victim = max(spare, key=lambda a: (spare[a], a))
            candidates = stealable[victim]
            for i in range(len(candidates) - 1, -1, -1):
                ts = candidates[i]
                if _may_run(ts, thief):
                    del candidates[i]
                    moves.append((ts, thief))
                    room -= 1
                    spare[victim] -= 1
                    break
            else:
                # nothing of this victim's suits this thief: try the others
                left = {a: n for a, n in spare.items() if a != victim}
                taken = _steal_from_others(left, stealable, thief, room, moves)
                for a, n in taken.items():
                    spare[a] -= n
                room = 0
            if victim in spare and spare[victim] <= 0:
                del spare[victim]
            for a in [a for a, n in spare.items() if n <= 0]:
                del spare[a]
    return moves


def _steal_from_others(
    spare: dict[str, int],
    stealable: dict[str, list[TaskState]],
    thief: WorkerInfo,
    room: int,
    moves: list[tuple[TaskState, WorkerInfo]],
) -> dict[str, int]:
    """Fill ``thief`` from the other victims, most loaded first; how many each gave."""
    taken: dict[str, int] = {}
    for victim in sorted(spare, key=lambda a: (-spare[a], a)):
        candidates = stealable[victim]
        i = len(candidates) - 1
        while room > 0 and i >= 0 and taken.get(victim, 0) < spare[victim]:
            ts = candidates[i]
            if _may_run(ts, thief):
                del candidates[i]
                moves.append((ts, thief))
                room -= 1
                taken[victim] = taken.get(victim, 0) + 1
            i -= 1
        if room <= 0:
            break
    return taken


def _free_threads(ws: WorkerInfo) -> int:
    """Threads of ``ws`` that no task sent to it will take."""
    return max(ws.nthreads, 1) - (len(ws.processing) - len(ws.long_running) + ws.held)


def plan_stranded(
    workers: Mapping[str, WorkerInfo],
    tasks: Callable[[Key], TaskState],
    seen: dict[Key, tuple[str, float]],
    now: float,
    after: float,
) -> list[tuple[TaskState, WorkerInfo]]:
    """The moves of stranded tasks (see "Stranded tasks" above).

    Args:
        workers: The live workers, by address.
        tasks: Looks a processing task up by key.
        seen: Each stranded task's worker and when it was first seen
            stranded there; updated in place (tasks no longer stranded leave).
        now: The time of this look.
        after: Seconds a task stays stranded before it moves.

    Returns:
        ``(task, thief)`` pairs, in order; empty when nothing should move.
    """
    thieves = [ws for ws in workers.values() if ws.accepting and _free_threads(ws) > 0]
    found: dict[Key, tuple[str, float]] = {}
    ripe: list[TaskState] = []
    if thieves:
        for ws in workers.values():
            waiting = -_free_threads(ws)
            if waiting <= 0:
                continue
            queued = [
                ts for ts in map(tasks, ws.processing) if ts.key not in ws.long_running
            ]
            queued.sort(key=lambda ts: (ts.started == 0, ts.started))
            for ts in queued[len(queued) - waiting:]:
                where, since = seen.get(ts.key, (ws.address, now))
                if where != ws.address:
                    since = now
                found[ts.key] = (ws.address, since)
                if now - since >= after:
                    ripe.append(ts)
    seen.clear()
    seen.update(found)
    if not ripe:
        return []
    free = {ws.address: _free_threads(ws) for ws in thieves}
    thieves.sort(key=lambda ws: (ws.occupancy, ws.address))
    ripe.sort(key=lambda ts: (ts.priority, ts.seq))
    moves: list[tuple[TaskState, WorkerInfo]] = []
    for ts in ripe:
        for thief in thieves:
            if free[thief.address] > 0 and _may_run(ts, thief):
                free[thief.address] -= 1
                moves.append((ts, thief))
                del seen[ts.key]
                break
    return moves
