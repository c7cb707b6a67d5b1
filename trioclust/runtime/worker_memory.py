"""A worker's memory management: the spill store, the memory monitor, pausing:
a mixin of :class:`~trioclust.runtime.worker.Worker`.

Theory of operation
-------------------
core/memory_policy.py decides; this measures and carries its decisions out.
A worker with a ``memory_limit`` keeps its results in a
:class:`~trioclust.runtime.spill.SpillStore` (runtime/spill.py) and runs a
monitor task that measures the process every
``worker.memory.monitor-interval``, and at once when a big result came in
(``_memory_poke``, set by ``_finish``; a thread task about to start measures
first too). Each measurement, a :class:`MemorySample`, goes to the policy,
and its actions are carried out: spill to disk, trim the allocator, pause or
resume; after a spill or a trim it measures again at once. The store's
target leaves room for what the running thread tasks are building
(``_result_size`` each). Pausing tells the scheduler
(``worker-status-change``) and the core (``PauseChanged``: while paused no
task starts and no dependency is fetched).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil
import trio

from trioclust import config
from trioclust.core import events as ev
from trioclust.core.keys import Key
from trioclust.core.memory_policy import (
    MemoryPolicy,
    MemorySample,
    PauseWorker,
    ResumeWorker,
    SpillData,
    TrimMemory,
)
from trioclust.protocol import messages as msgs
from trioclust.runtime.spill import SpillStore, trim_memory

if TYPE_CHECKING:
    from trioclust.core.worker_state import WorkerState
    from trioclust.runtime.worker_execution import _ThreadJob

logger = logging.getLogger("trioclust.worker")


class MemoryManagement:
    """The Worker's memory management (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Worker's

        name: str | None
        state: WorkerState
        nthreads: int
        memory_limit: int
        paused: bool
        _process: psutil.Process
        _memory_policy: MemoryPolicy
        _monitor_interval: float
        _store: SpillStore | None
        _memory_poke: trio.Event
        _thread_jobs: dict[Key, _ThreadJob]
        _result_size: float

        def _handle(self, *events: Any) -> None: ...

        def _send(
            self,
            msg: Any,
            *,
            urgent: bool = True,
            on_written: Callable[[], object] | None = None,
        ) -> None: ...

        def _send_heartbeat(self) -> None: ...

    def _open_store(self) -> None:
        """The spill store, when there is a limit to keep to (see runtime/spill.py)."""
        thresholds = self._memory_policy.thresholds
        if self._store is None and self.memory_limit and (thresholds.target or thresholds.spill):
            directory = config.get("worker.memory.spill-directory")
            self._store = SpillStore(self._memory_policy.target_bytes, directory)

    def _memory_sample(self) -> MemorySample:
        try:
            rss = self._process.memory_info().rss
        except psutil.Error:
            rss = 0
        store = self._store
        if store is not None:
            return MemorySample(process=rss, managed=store.memory_bytes, spilled=store.spilled_bytes)
        managed = sum(ts.nbytes for ts in self.state.tasks.values() if ts.state == "memory")
        return MemorySample(process=rss, managed=managed)

    async def _monitor_memory(self) -> None:
        """Measure every ``worker.memory.monitor-interval``, and at once when
        a big result comes in (``_memory_poke``)."""
        while True:
            with trio.move_on_after(self._monitor_interval):
                await self._memory_poke.wait()
            self._check_memory()

    def _check_memory(self) -> None:
        """One turn of the memory monitor (core/memory_policy.py decides)."""
        if self._memory_poke.is_set():
            self._memory_poke = trio.Event()
        spilled_before = self._store.spilled_bytes if self._store is not None else 0
        for _ in range(2):  # after a trim or a spill, measure again at once
            again = False
            sample = self._memory_sample()
            if self._store is not None:
                # room for what the running thread tasks are building
                running = min(len(self._thread_jobs), self.nthreads)
                making = int(running * self._result_size)
                managed_target = self._memory_policy.managed_target(sample, making)
                if managed_target is not None:
                    self._store.target = managed_target
            for action in self._memory_policy.worker_sample(sample):
                if isinstance(action, SpillData):
                    if self._store is not None and self._store.evict(action.nbytes):
                        again = True
                elif isinstance(action, TrimMemory):
                    again = trim_memory() or again
                elif isinstance(action, PauseWorker):
                    self._set_paused(True, action.reason)
                elif isinstance(action, ResumeWorker):
                    self._set_paused(False, "")
            if not again:
                break
        if self._store is not None and self._store.spilled_bytes != spilled_before:
            self._send_heartbeat()  # the scheduler shows spilled bytes without waiting

    def _set_paused(self, paused: bool, reason: str) -> None:
        self.paused = paused
        stim = f"worker-memory-{time.time()}"
        sample = self._memory_sample()
        if paused:
            logger.warning(
                "Worker %s pauses (%s); unmanaged %d bytes, spilled %d bytes",
                self.name, reason, sample.unmanaged, sample.spilled,
            )
        else:
            logger.warning(
                "Worker %s resumes: process memory %d bytes is under worker.memory.pause",
                self.name, sample.process,
            )
        status: msgs.WorkerStatusChangeMsg = {
            "op": "worker-status-change", "status": "paused" if paused else "running",
            "reason": reason, "stimulus_id": stim,
        }
        self._send(status)
        self._handle(ev.PauseChanged(paused=paused, stimulus_id=stim))
