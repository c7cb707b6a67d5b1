"""Where the scheduler runs a ready task: by data locality, else on the least busy worker."""

# Theory of operation
# ===================
#
# A task with dependencies runs where most of its dependencies' bytes already
# are, whatever that worker's load: moving data costs more than waiting for a
# thread. Among equal holders, and for a task without dependencies, the least
# occupied worker wins (tasks in flight per thread), and among equally
# occupied workers the one given work least recently, so that a stream of
# tasks spreads evenly instead of piling onto the first worker.
#
# Finding the least occupied worker must not cost a scan of every worker per
# task. A heap holds (occupancy, stamp, address) entries; each change to a
# worker's ``processing`` set bumps a global stamp, records it on the worker
# and pushes a fresh entry. An entry whose stamp is no longer its worker's (or
# whose worker left) is stale and is discarded when it reaches the top. The
# heap is rebuilt from the live workers when stale entries pile up, so it
# stays O(workers) in size and each operation O(log workers) amortized.
#
# A task without dependencies is placed only while that worker runs fewer
# than its ``capacity``; otherwise the caller queues it. Room is monotone in
# occupancy (``n < ceil(t * s)`` iff ``n / t < s`` for whole ``n``), so if the
# least occupied worker has no room, none has.
#
# A worker that is not ``accepting`` (paused for memory, or every thread held
# by a cancelled task still running) gets nothing: its heap entries are
# dropped when they reach the top, and the event that makes it accept again
# touches it, which pushes a fresh one. A task whose dependencies are held
# only there runs on the least occupied accepting worker instead.
#
# Restricted tasks
# ----------------
# A task with ``restrictions`` (``workers=``, ``resources=``) may run only on
# workers that have every resource it asks for (the totals a worker was
# started with; the worker itself runs a task only while that much is free)
# and, unless ``loose`` (``allow_other_workers=True``) and none of them is
# there, on a worker whose address, name or host it names. Among those, the
# one holding most of its dependencies' bytes wins, then the least occupied.
# Finding them scans every worker, so only restricted tasks pay for it; they
# are never queued for saturation (as in Dask): they go to their worker at
# once, or wait as ``no-worker`` until one that fits joins.
#
# Root tasks
# ----------
# A *root task* (no dependencies, but dependents: a reduction's leaf) has
# its result held on the worker until its dependents run, and those can only
# be sent once the scheduler hears that their inputs are done: with dozens of
# leaves in flight per thread, a worker runs leaf after leaf meanwhile and
# the partial sums lag behind, holding dozens of chunks (400 MB of 8 MB
# chunks per worker). So a root task goes to a worker beyond its
# ``root_capacity`` (about one per thread) only while the worker's stored
# bytes plus its tasks in flight, each counted at the worker's mean stored
# key size, stay within ``root_bytes`` (a fraction of its memory limit).
# Big results thus flow about one per thread, and the dependents (ahead of
# later leaves by dask.order's priorities, on the scheduler and in the
# worker's ready heap) keep up; small ones (a sum of small chunks) keep the
# full capacity, as do tasks that feed nothing (``map``, ``submit``): one
# leaf per thread in flight makes each leaf wait a round trip, three times
# slower for small chunks on a busy machine. A worker that has stored nothing
# yet is not limited, so the first round of leaves may still be full size.
# With this rule, room is monotone in occupancy only for tasks that feed
# nothing: for a root task the least occupied worker may be full while
# another is not; the queue then waits for a task to finish (one always runs
# on the full worker, whose root_capacity is at least 1).

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from trioclust.core.scheduler_tasks import Restrictions, TaskState, WorkerInfo

__all__ = ["Placement", "allows", "has_resources", "unrunnable_reason"]


def has_resources(ws: WorkerInfo, resources: Mapping[str, float]) -> bool:
    """Whether ``ws`` has at least this much of every resource."""
    have = ws.resources
    return all(have.get(name, 0.0) >= amount for name, amount in resources.items())


def _named(ws: WorkerInfo, names: frozenset[str]) -> bool:
    # an address, with or without its scheme ("127.0.0.1:8989"), a name, a host
    return (
        ws.address in names or ws.name in names or ws.host in names
        or ws.address.partition("://")[2] in names
    )


def allows(r: Restrictions, ws: WorkerInfo) -> bool:
    """Whether a task restricted by ``r`` may be moved to ``ws`` (work
    stealing): it has the resources, and is named unless ``loose``."""
    if not has_resources(ws, r.resources):
        return False
    return not r.workers or r.loose or _named(ws, r.workers)


def unrunnable_reason(ts: TaskState) -> str:
    """Why a restricted task waits as ``no-worker``, in words."""
    r = ts.restrictions
    if r is None:
        return "no worker is connected"
    wants = []
    if r.workers:
        wants.append(f"one of the workers {sorted(r.workers)}")
    if r.resources:
        wants.append(f"the resources {dict(r.resources)}")
    return f"needs {' with '.join(wants)}; no connected worker has that"


class Placement:
    """Chooses workers for ready tasks.

    Args:
        workers: The scheduler's live ``{address: WorkerInfo}`` mapping; it is
            read, never changed, here.
    """

    def __init__(self, workers: dict[str, WorkerInfo]) -> None:
        self._workers = workers
        self._heap: list[tuple[float, int, str]] = []
        self._stamp = 0

    def touch(self, ws: WorkerInfo) -> None:
        """Record that ``ws`` joined or that its ``processing`` set changed."""
        self._stamp = stamp = self._stamp + 1
        ws.stamp = stamp
        heap = self._heap
        busy = len(ws.processing) - len(ws.long_running) + ws.held
        heapq.heappush(heap, (busy / max(ws.nthreads, 1), stamp, ws.address))
        if len(heap) > 4 * len(self._workers) + 64:
            heap[:] = [(w.occupancy, w.stamp, w.address) for w in self._workers.values()]
            heapq.heapify(heap)

    def least_occupied(self) -> WorkerInfo | None:
        """The least occupied accepting worker (least recently touched among equals), if any."""
        heap = self._heap
        workers = self._workers
        while heap:
            _, stamp, address = heap[0]
            ws = workers.get(address)
            if ws is not None and ws.stamp == stamp and ws.accepting:
                return ws
            heapq.heappop(heap)
        return None

    def has_room(self, ts: TaskState) -> bool:
        """Whether some worker can take ``ts``, a task without dependencies."""
        ws = self.least_occupied()
        return ws is not None and _has_room_for(ws, ts)

    def choose(self, ts: TaskState) -> WorkerInfo | None:
        """Where ``ts`` should run now.

        Args:
            ts: A task whose dependencies are all in memory.

        Returns:
            The worker, or None when there is no worker, or when ``ts`` has no
            dependencies and no worker has room for it.
        """
        if not ts.dependencies:
            ws = self.least_occupied()
            if ws is not None and _has_room_for(ws, ts):
                return ws
            return None
        candidates: Iterable[str]
        if len(ts.dependencies) == 1:
            candidates = next(iter(ts.dependencies)).who_has
        else:
            held: dict[str, int] = {}
            for dep in ts.dependencies:
                nbytes = dep.nbytes
                for address in dep.who_has:
                    held[address] = held.get(address, 0) + nbytes
            most = max(held.values(), default=0)
            candidates = [address for address, n in held.items() if n == most]
        best: WorkerInfo | None = None
        for address in candidates:
            ws = self._workers.get(address)
            if ws is not None and ws.accepting and (
                best is None or (ws.occupancy, ws.stamp) < (best.occupancy, best.stamp)
            ):
                best = ws
        return best if best is not None else self.least_occupied()

    def choose_restricted(self, ts: TaskState) -> WorkerInfo | None:
        """Where the restricted task ``ts`` should run now, or None when no
        connected worker fits (see "Restricted tasks" above)."""
        r = ts.restrictions
        assert r is not None
        workers = self._workers.values()
        able = [ws for ws in workers if has_resources(ws, r.resources)]
        if r.workers:
            named = [ws for ws in able if _named(ws, r.workers)]
            if named or not r.loose:
                able = named
        if not able:
            return None
        held: dict[str, int] = {}
        for dep in ts.dependencies:
            for address in dep.who_has:
                held[address] = held.get(address, 0) + dep.nbytes
        return min(able, key=lambda ws: (-held.get(ws.address, 0), ws.occupancy, ws.stamp))


def _has_room_for(ws: WorkerInfo, ts: TaskState) -> bool:
    """Whether ``ws`` may take ``ts``, a task without dependencies, now."""
    n = ws.busy
    if n >= ws.capacity:
        return False
    if not ts.dependents or n < ws.root_capacity:
        return True
    stored = ws.nbytes_stored
    return stored + n * stored / max(len(ws.has_what), 1) <= ws.root_bytes
