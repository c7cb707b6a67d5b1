"""How a worker shares out its abstract resources (``resources={"GPU": 2}``)
among the tasks that ask for some: a mixin of
:class:`~trioclust.core.worker_state.WorkerState`."""

# Theory of operation
# ===================
#
# A worker started with ``resources={"GPU": 2}`` runs a task that asks for
# some (``ComputeRequested.resources``) only while that much is free: such a
# ready task waits in a heap of its own, and ``_ensure_computing`` starts the
# better-priority head of the two heaps that can start; the resources are
# held from ``Execute`` until the run ends (its thread returns), and a task
# with resources that are busy never holds up the tasks without.
#
# ``available_resources`` is what is free now: ``_hold_resources`` takes a
# task's share when it starts (``Execute``), ``_release_resources`` gives it
# back when its run ends, whatever the outcome (``_holding`` says what each
# running task holds).

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import TYPE_CHECKING

from trioclust.core.keys import Key
from trioclust.core.worker_tasks import EXECUTING, READY, WorkerTask

__all__ = ["ResourceAccounting"]


class ResourceAccounting:
    """WorkerState's resource accounting (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # WorkerState's

        tasks: dict[Key, WorkerTask]
        executing: set[Key]
        long_running: set[Key]
        nthreads: int
        available_resources: dict[str, float]
        _ready: list[tuple[int, int, Key]]
        _constrained: list[tuple[int, int, Key]]
        _holding: dict[Key, Mapping[str, float]]

        def _transitions(self, recs: dict[Key, str], stimulus_id: str) -> None: ...

    def _ensure_computing_constrained(self, stimulus_id: str) -> None:
        """Start ready tasks from both heaps, best priority first, those with
        resources only while theirs are free (see the module's notes)."""
        ready = self._ready
        constrained = self._constrained
        tasks = self.tasks
        while len(self.executing) - len(self.long_running) < self.nthreads:
            for heap in (ready, constrained):
                while heap and ((t := tasks.get(heap[0][2])) is None or t.state != READY):
                    heapq.heappop(heap)  # left READY another way meanwhile
            head = None
            if constrained and self._fits(tasks[constrained[0][2]]):
                head = constrained
            if ready and (head is None or ready[0] < constrained[0]):
                head = ready
            if head is None:
                return
            key = heapq.heappop(head)[2]
            self._transitions({key: EXECUTING}, stimulus_id)

    def _fits(self, ts: WorkerTask) -> bool:
        available = self.available_resources
        return all(available.get(name, 0.0) >= n for name, n in (ts.resources or {}).items())

    def _hold_resources(self, ts: WorkerTask) -> None:
        if ts.resources:
            available = self.available_resources
            for name, n in ts.resources.items():
                available[name] = available.get(name, 0.0) - n
            self._holding[ts.key] = ts.resources

    def _release_resources(self, key: Key) -> None:
        """The run of ``key`` ended (its thread returned): free what it held."""
        held = self._holding.pop(key, None)
        if held:
            available = self.available_resources
            for name, n in held.items():
                available[name] = available.get(name, 0.0) + n
