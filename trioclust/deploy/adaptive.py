"""``Adaptive``: the loop that feeds a cluster's scheduler measurements to the
decisions of :mod:`trioclust.core.adaptive` and carries them out.

Every ``interval`` it asks the scheduler for its workload
(``adaptive-workload``), hands it to :class:`~trioclust.core.adaptive.AdaptiveState`,
and scales the cluster up (more jobs) or retires the workers it names (their
data moved first, then their jobs stopped). Each decision that changes
something is logged on ``trioclust.adaptive`` at INFO; all are kept in
:attr:`Adaptive.log`. The loop runs in the cluster's nursery and stops with
the cluster, with ``cluster.scale(...)``, or with a new ``cluster.adapt(...)``.
A job that fails to start is logged at ERROR and the loop goes on.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any

import trio

from trioclust.core.adaptive import (
    AdaptiveState,
    Decision,
    Measured,
    RetireWorkers,
    ScaleUp,
    WorkerLoad,
    Workload,
)
from trioclust.errors import ClusterStartError
from trioclust.protocol import messages as msgs

if TYPE_CHECKING:
    from collections import deque

    from trioclust.deploy.cluster import Cluster

__all__ = ["Adaptive", "parse_seconds"]

logger = logging.getLogger("trioclust.adaptive")

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_seconds(value: str | float) -> float:
    """Seconds from ``"500ms"``, ``"1s"``, ``"2 min"``, ``"1h"`` or a number."""
    if isinstance(value, int | float):
        return float(value)
    found = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", value)
    if found is None or found.group(2) not in ("", *_UNITS):
        raise ValueError(f"not a duration: {value!r} (use '500ms', '1s', '2min', '1h')")
    return float(found.group(1)) * _UNITS.get(found.group(2), 1.0)


class Adaptive:
    """A cluster's adaptive scaling (made by :meth:`Cluster.adapt`).

    Args:
        cluster: the cluster to scale.
        minimum: fewest workers.
        maximum: most workers.
        interval: seconds between decisions.
        wait_count: consecutive decisions naming a worker before it is retired.
        target_duration: seconds the queued work should take.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: float = 1.0,
        wait_count: int = 3,
        target_duration: float = 5.0,
    ) -> None:
        self.cluster = cluster
        self.interval = interval
        self.state = AdaptiveState(
            minimum=minimum, maximum=maximum, wait_count=wait_count,
            target_duration=target_duration,
        )
        self._scope: trio.CancelScope | None = None
        self._stopped = False
        self._decisions = 0

    @property
    def minimum(self) -> int:
        """Fewest workers."""
        return self.state.minimum

    @property
    def maximum(self) -> float:
        """Most workers."""
        return self.state.maximum

    @property
    def log(self) -> deque[Decision]:
        """The latest decisions, oldest first."""
        return self.state.log

    def __repr__(self) -> str:
        return f"<Adaptive minimum={self.minimum} maximum={self.maximum} interval={self.interval}s>"

    def stop(self) -> None:
        """Stop deciding (in the cluster's loop); the workers stay as they are."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Decide every ``interval`` until stopped."""
        with trio.CancelScope() as scope:
            self._scope = scope
            if self._stopped:
                scope.cancel()
            task_status.started()
            while True:
                await self.step()
                await trio.sleep(self.interval)

    async def step(self) -> None:
        """Measure once, decide, and carry the decision out."""
        reply: msgs.AdaptiveWorkloadReply = await self.cluster._scheduler_request("adaptive-workload")
        load = Workload(
            ready=reply["ready"], processing=reply["processing"], durations=reply["durations"],
            workers=tuple(WorkerLoad(**w) for w in reply["workers"]),
        )
        self._decisions += 1
        planned = len(self.cluster.workers) * self.cluster.workers_per_job
        out = self.state.handle(
            Measured(
                workload=load, planned=planned, now=trio.current_time(),
                stimulus_id=f"adaptive-{self._decisions}",
            )
        )
        for instruction in out:
            logger.info("%s", self.state.log[-1])
            if isinstance(instruction, ScaleUp):
                jobs = math.ceil(instruction.n / self.cluster.workers_per_job)
                try:
                    await self.cluster._scale_jobs(jobs)
                except ClusterStartError as exc:  # the cluster keeps serving; the next decision retries
                    logger.error("adaptive: could not scale up: %s", exc)
            elif isinstance(instruction, RetireWorkers):
                await self.cluster._retire_workers(list(instruction.workers))
