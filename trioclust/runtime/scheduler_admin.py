"""The scheduler's operations on the cluster: retiring workers, copying
replicas (``replicate``, ``rebalance``), restarting, and running functions on
the workers (``client.run``) or in the scheduler (``run_on_scheduler``).

Theory of operation
-------------------
What moves where is the core's decision: ``RetireWorkers``, ``Replicate`` and
``Rebalance`` come back as ``AcquireReplicas`` instructions, which
``Scheduler._handle`` collects in its ``moves`` instead of dispatching them.
The operation then carries them out concurrently (``_acquire_replicas``: an
``acquire-replicas`` request to the worker that is to hold the copies) and
tells the core how each went (``AddReplicas`` or ``ReplicasFailed``, also
when it timed out), so a retiring worker is told to close only once its data
has moved. ``restart`` releases every client's keys, tells the clients and
the workers, and waits on the workers' comings and goings. ``broadcast``
sends ``run`` to each worker at once and answers every worker's result or
error.

:class:`AdminHandlers` is a mixin of :class:`~trioclust.runtime.scheduler.Scheduler`;
``_CLIENT_HANDLERS`` in runtime/scheduler.py maps each op to its method.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from trioclust import config
from trioclust.core import events as ev
from trioclust.errors import CommClosedError, RemoteError
from trioclust.protocol import messages as msgs
from trioclust.runtime.execution import call_function

if TYPE_CHECKING:
    from trioclust.comm import Link
    from trioclust.core import instructions as ins
    from trioclust.core.scheduler_state import SchedulerState

logger = logging.getLogger("trioclust.scheduler")


class AdminHandlers:
    """The Scheduler's operations on the cluster (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Scheduler's

        state: SchedulerState
        worker_links: dict[str, Link]
        client_links: dict[str, Link]
        _leaving: set[str]
        _workers_changed: trio.Event

        def _handle(self, *events: Any, moves: list[ins.AcquireReplicas] | None = None) -> None: ...

        def _plugins_call(self, hook: str, *args: Any, **kwargs: Any) -> None: ...

    # ---------------------------------------------------- retiring workers
    async def _client_retire_workers(self, client: str, msg: msgs.RetireWorkersMsg) -> list[str]:
        return await self.retire_workers(msg.get("workers"), msg.get("n"))

    async def retire_workers(
        self, addresses: list[str] | None = None, n: int | None = None, timeout: float | None = None
    ) -> list[str]:
        """Close workers gracefully: their data moves to the other workers first.

        Args:
            addresses: the workers to retire; or
            n: how many to retire (those holding the least data go first).
            timeout: seconds to wait for their data to move and for them to
                leave; default ``runtime.close-timeout`` times four.

        Returns the addresses retired. Keys only they held are copied to the
        remaining workers (round-robin) before they are told to close, so
        nothing is recomputed.
        """
        if addresses is None:
            addresses = list(self.state.workers_to_retire(n or 0))
        retiring = [a for a in addresses if a in self.worker_links]
        limit = timeout if timeout is not None else 4 * config.get_float("runtime.close-timeout")
        moves: list[ins.AcquireReplicas] = []
        self._handle(
            ev.RetireWorkers(workers=tuple(retiring), stimulus_id=f"retire-workers-{time.time()}"),
            moves=moves,
        )
        with trio.move_on_after(limit):
            async with trio.open_nursery() as nursery:
                for move in moves:
                    nursery.start_soon(self._acquire_replicas, move)
        with trio.move_on_after(limit):
            while any(a in self.worker_links for a in retiring):
                await self._workers_changed.wait()
        return retiring

    async def _acquire_replicas(self, move: ins.AcquireReplicas) -> None:
        """Carry out one AcquireReplicas and tell the core how it went (also
        when it is cancelled: the retiring worker then leaves all the same)."""
        event: ev.AddReplicas | ev.ReplicasFailed = ev.ReplicasFailed(
            worker=move.worker, retiring=move.retiring, reason="timed out",
            stimulus_id=move.stimulus_id,
        )
        link = self.worker_links.get(move.worker)
        try:
            if link is None:
                raise CommClosedError(f"worker {move.worker} left")
            reply: msgs.AcquireReplicasReply = await link.request(
                "acquire-replicas", who_has={k: list(v) for k, v in move.who_has.items()},
                stimulus_id=move.stimulus_id,
            )
            event = ev.AddReplicas(
                worker=move.worker, keys=tuple(reply["keys"]), retiring=move.retiring,
                stimulus_id=move.stimulus_id,
            )
        except (CommClosedError, RemoteError) as exc:
            logger.warning("Could not move data from %s to %s: %s", move.retiring, move.worker, exc)
            event = ev.ReplicasFailed(
                worker=move.worker, retiring=move.retiring, reason=str(exc),
                stimulus_id=move.stimulus_id,
            )
        finally:
            self._handle(event)

    # ------------------------------------------ replicate and rebalance
    async def _client_replicate(self, client: str, msg: msgs.ReplicateMsg) -> None:
        await self._copy_replicas(
            ev.Replicate(
                keys=tuple(msg["keys"]), n=msg["n"], workers=self._addresses(msg["workers"]),
                stimulus_id=f"replicate-{time.time()}",
            )
        )

    async def _client_rebalance(self, client: str, msg: msgs.RebalanceMsg) -> None:
        await self._copy_replicas(
            ev.Rebalance(
                keys=tuple(msg["keys"]) if msg["keys"] is not None else None,
                workers=self._addresses(msg["workers"]), stimulus_id=f"rebalance-{time.time()}",
            )
        )

    def _addresses(self, workers: list[str] | None) -> tuple[str, ...] | None:
        """Worker addresses for addresses or names (as Dask's ``workers=``)."""
        if workers is None:
            return None
        by_name = {w.name: a for a, w in self.state.workers.items()}
        return tuple(w if w in self.state.workers else by_name.get(w, w) for w in workers)

    async def _copy_replicas(self, event: ev.Replicate | ev.Rebalance) -> None:
        """Hand the event to the core and carry out the copies it plans."""
        moves: list[ins.AcquireReplicas] = []
        self._handle(event, moves=moves)
        with trio.move_on_after(4 * config.get_float("runtime.close-timeout")):
            async with trio.open_nursery() as nursery:
                for move in moves:
                    nursery.start_soon(self._acquire_replicas, move)

    # ------------------------------------------------------------- restart
    async def _client_restart(self, client: str, msg: msgs.RestartMsg) -> None:
        await self.restart(msg["timeout"], msg["wait_for_workers"])

    async def restart(self, timeout: float | None = None, wait_for_workers: bool = True) -> None:
        """Release every client's keys, cancel their futures, and restart every worker.

        Workers under a nanny come back as fresh processes; a worker without
        one closes, as in Dask. With ``wait_for_workers``, waits until as many
        workers as before are registered, else until the old ones are gone;
        raises ``TimeoutError`` after ``timeout`` seconds (default four times
        ``comm.timeouts.connect``).
        """
        limit = timeout if timeout is not None else 4 * config.get_float("comm.timeouts.connect")
        stim = f"restart-{time.time()}"
        releases = [
            ev.ReleaseKeys(client=c, keys=self.state.wanted_by(c), stimulus_id=stim)
            for c in list(self.client_links)
        ]
        self._handle(*releases)
        for link in list(self.client_links.values()):
            told: msgs.RestartClientMsg = {"op": "restart"}
            try:
                link.send(told)
            except CommClosedError:
                pass
        old = set(self.worker_links)
        for address in old:
            link = self.worker_links[address]
            restart: msgs.RestartWorkerMsg = {"op": "restart"}
            try:
                self._leaving.add(address)
                link.send(restart)
            except CommClosedError:
                pass
        self._plugins_call("restart", self)
        with trio.move_on_after(limit) as waited:
            while any(a in self.worker_links for a in old) or (
                wait_for_workers and len(self.worker_links) < len(old)
            ):
                await self._workers_changed.wait()
        if waited.cancelled_caught:
            back = len(set(self.worker_links) - old)
            raise TimeoutError(
                f"client.restart: {back} of {len(old)} workers were back after {limit:g} s "
                f"(workers without a nanny do not come back)"
            )

    # --------------------------------------------------- running functions
    async def _client_run_on_scheduler(self, client: str, msg: msgs.RunOnSchedulerMsg) -> Any:
        return await call_function(msg, self, ("dask_scheduler", "scheduler"))

    async def _client_broadcast(self, client: str, msg: msgs.BroadcastMsg) -> msgs.BroadcastReply:
        """Run a function on workers (``client.run``), concurrently."""
        targets = msg.get("workers") or list(self.worker_links)
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}

        async def one(address: str) -> None:
            link = self.worker_links.get(address)
            if link is None:
                errors[address] = {"exception": None, "text": f"no worker at {address}"}
                return
            try:
                results[address] = await link.request(
                    "run", function=msg["function"], args=msg["args"], kwargs=msg["kwargs"]
                )
            except RemoteError as exc:
                errors[address] = {"exception": exc.exception, "text": exc.text}
            except CommClosedError as exc:
                errors[address] = {"exception": None, "text": f"worker {address} left: {exc}"}

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(one, address)
        return {"results": results, "errors": errors}
