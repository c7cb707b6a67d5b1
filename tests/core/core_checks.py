"""Invariants of the core state machines, asserted by the tests after each step."""

from __future__ import annotations

from collections import Counter

from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.scheduler_tasks import (
    ACTIVE_STATES,
    ERRED,
    MEMORY,
    NO_WORKER,
    PROCESSING,
    QUEUED,
    RELEASED,
    TASK_STATES,
    WAITING,
)
from trioclust.core.worker_state import WorkerState


def check_scheduler(s: SchedulerState) -> None:
    """Assert every invariant the scheduler keeps between two ``handle`` calls."""
    counts: Counter[str] = Counter()
    for key, ts in s.tasks.items():
        assert ts.key == key
        assert ts.state in TASK_STATES, ts
        counts[ts.state] += 1
        for dep in ts.dependencies:
            assert s.tasks.get(dep.key) is dep, (ts, dep)
            assert ts in dep.dependents, (ts, dep)
        for dts in ts.dependents:
            assert s.tasks.get(dts.key) is dts, (ts, dts)
            assert ts in dts.dependencies, (ts, dts)
        assert ts.waiters == {d for d in ts.dependents if d.state in ACTIVE_STATES}, ts
        needed = bool(ts.who_wants or ts.waiters)
        if ts.state == MEMORY:
            assert ts.who_has, ts
            assert needed, ts
            for address in ts.who_has:
                assert key in s.workers[address].has_what, (ts, address)
        else:
            assert not ts.who_has, ts
        if ts.state == PROCESSING:
            ws = ts.processing_on
            assert ws is not None, ts
            assert s.workers[ws.address] is ws, ts
            assert key in ws.processing, ts
        else:
            assert ts.processing_on is None, ts
        if ts.state in ACTIVE_STATES:
            assert needed, ts
        if ts.state == WAITING:
            assert ts.waiting_on, ts
            assert ts.waiting_on == {d for d in ts.dependencies if d.state != MEMORY}, ts
        elif ts.state in (QUEUED, NO_WORKER, PROCESSING):
            assert all(d.state == MEMORY for d in ts.dependencies), ts
        if ts.state == QUEUED:
            assert not ts.dependencies, ts
        if ts.state == RELEASED:
            assert not needed, ts
            assert ts.dependents, ts
        if ts.state == ERRED:
            assert needed or ts.dependents, ts
            assert ts.exception_blame is not None, ts
        for client in ts.who_wants:
            assert client in s.clients, (ts, client)
    assert dict(counts) == s.tasks_by_state()
    for address, ws in s.workers.items():
        assert ws.address == address
        for key in ws.processing:
            assert s.tasks[key].processing_on is ws, (ws, key)
        assert ws.long_running <= ws.processing, ws
        for key in ws.has_what:
            assert address in s.tasks[key].who_has, (ws, key)
        assert ws.nbytes_stored == sum(s.tasks[k].nbytes for k in ws.has_what), ws
    assert s._seceded == sum(len(ws.long_running) for ws in s.workers.values())
    if counts[QUEUED]:  # the best queued task fits nowhere (root tasks: see scheduler_placement)
        best = min((t for t in s.tasks.values() if t.state == QUEUED), key=lambda t: (t.priority, t.seq))
        assert not s._placement.has_room(best), best
    if counts[NO_WORKER]:
        # no worker at all, or none that fits the task's restrictions
        assert not s.workers or all(
            ts.restrictions is not None for ts in s.tasks.values() if ts.state == NO_WORKER
        )


def check_worker(w: WorkerState, most_slots: int | None = None) -> None:
    """Assert every invariant the worker keeps between two ``handle`` calls.

    ``most_slots``: the largest ``nthreads`` it had since its tasks started
    (SlotsChanged may have lowered it since); its current one if None.
    """
    for key, ts in w.tasks.items():
        assert ts.key == key
        if ts.state == "memory":
            assert key in w.data, ts
        else:
            assert key not in w.data, ts
        if ts.state == "executing" or (ts.state == "cancelled" and ts.previous == "executing"):
            assert key in w.executing, ts
        if ts.state == "flight" or (ts.state == "cancelled" and ts.previous == "flight"):
            assert ts.peer is not None, ts
            assert key in w.in_flight.get(ts.peer, ()), ts
        if ts.state == "fetch":
            assert ts.who_has, ts
            assert w.address not in ts.who_has, ts
        for dts in ts.dependents:
            assert ts in dts.dependencies, (ts, dts)
            assert dts.state in ("waiting", "ready", "executing", "released"), (ts, dts)
        if not ts.requested and not ts.dependents:
            assert ts.state == "cancelled", ts
        if ts.state == "waiting":
            assert ts.waiting_for_data, ts
            assert ts.waiting_for_data == {d for d in ts.dependencies if d.state != "memory"}
        if ts.state == "ready":
            assert all(d.state == "memory" for d in ts.dependencies), ts
    assert set(w.data) <= set(w.tasks)
    assert w.long_running <= w.executing
    running = len(w.executing) - len(w.long_running)  # seceded tasks hold no slot
    assert running <= max(w.nthreads, most_slots or 0)
    for key in w.executing:
        assert key in w.tasks
    # more than nthreads execute only after SlotsChanged lowered it: tasks
    # already handed out are not taken back, and nothing new starts meanwhile
    # (a task that needs resources may also wait for them to be free)
    if any(ts.state == "ready" and not ts.resources for ts in w.tasks.values()):
        assert running >= w.nthreads
