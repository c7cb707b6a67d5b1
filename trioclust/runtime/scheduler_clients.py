"""The scheduler's client side: the handlers of a client's graph and of its
questions about the cluster.

Theory of operation
-------------------
A client's link (``Scheduler._serve_client``) calls the ``_client_<op>``
method of each message with the client's id. The graph's messages
(``update-graph``, ``release-keys``, ``update-data``, ``retry``) each become
one core event, handled at once. The questions (``who-has``,
``scheduler-info``, ``get-who-has``, ``has-what``, ``nthreads``, the
adaptive workload of a cluster manager, the task stream and the workers'
history) are answered from the core's state and the scheduler's records;
``get-logs`` and ``profile`` ask the workers, concurrently, and a worker
that cannot answer is left out or named in the answer.

:class:`ClientHandlers` is a mixin of :class:`~trioclust.runtime.scheduler.Scheduler`;
``_CLIENT_HANDLERS`` in runtime/scheduler.py maps each op to its method.
Requests that act on the cluster (retiring, restarting, running functions,
moving data) are in runtime/scheduler_admin.py, plugins and uploads in
runtime/scheduler_plugins.py.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from trioclust.core import adaptive
from trioclust.core import events as ev
from trioclust.core.keys import Key
from trioclust.dashboard.task_stream import TaskStream, key_prefix
from trioclust.errors import CommClosedError, RemoteError
from trioclust.protocol import messages as msgs
from trioclust.runtime import profiling
from trioclust.runtime.log_capture import process_logs

if TYPE_CHECKING:
    from trioclust.comm import Link
    from trioclust.core import instructions as ins
    from trioclust.core.scheduler_state import SchedulerState

logger = logging.getLogger("trioclust.scheduler")

#: recent finished runs whose durations an adaptive decision averages per prefix
_ADAPTIVE_RUNS = 1000


class ClientHandlers:
    """The Scheduler's handlers of a client's graph and questions (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Scheduler's

        state: SchedulerState
        task_stream: TaskStream
        worker_links: dict[str, Link]
        worker_history: deque[tuple[float, str, float, int]]
        plugins: dict[str, Any]

        def _handle(self, *events: Any, moves: list[ins.AcquireReplicas] | None = None) -> None: ...

        def _plugins_call(self, hook: str, *args: Any, **kwargs: Any) -> None: ...

        def identity(self) -> dict[str, Any]: ...

        async def wait_for_workers(self, n: int) -> None: ...

    # ------------------------------------------------------------ the graph
    def _client_update_graph(self, client: str, msg: msgs.UpdateGraphMsg) -> None:
        tasks = tuple(
            ev.NewTask(key=t[0], run_spec=t[1], dependencies=tuple(t[2]), priority=int(t[3]))
            if len(t) == 4
            else _restricted_task(t)
            for t in msg["tasks"]
        )
        self._handle(
            ev.UpdateGraph(
                client=client, tasks=tasks, wanted=tuple(msg["wanted"]), stimulus_id=msg["stimulus_id"]
            )
        )
        if self.plugins:
            self._plugins_call(
                "update_graph", scheduler=self, client=client, keys=set(msg["wanted"]),
                tasks=[t.key for t in tasks], stimulus_id=msg["stimulus_id"],
            )

    def _client_retry(self, client: str, msg: msgs.RetryMsg) -> None:
        self._handle(ev.RetryTasks(client=client, keys=tuple(msg["keys"]), stimulus_id=msg["stimulus_id"]))

    def _client_release_keys(self, client: str, msg: msgs.ReleaseKeysMsg) -> None:
        self._handle(ev.ReleaseKeys(client=client, keys=tuple(msg["keys"]), stimulus_id=msg["stimulus_id"]))

    def _client_update_data(self, client: str, msg: msgs.UpdateDataMsg) -> None:
        self._handle(
            ev.UpdateData(
                client=client, who_has={k: tuple(v) for k, v in msg["who_has"].items()},
                nbytes=dict(msg["nbytes"]), stimulus_id=msg["stimulus_id"],
            )
        )

    # ------------------------------------------------------------ questions
    def _client_who_has(self, client: str, msg: msgs.WhoHasMsg) -> dict[Key, list[str]]:
        if self.state.has_reports:
            # a result told early (KeyInMemory before its pass) is asked for
            # next: its holder is known only once the report is handled
            self._handle()
        # a key this client no longer wants here (released, or never known) is
        # left out: its futures are cancelled, and fetching it would wait in vain
        tasks, state = self.state.tasks, self.state
        return {k: sorted(tasks[k].who_has) for k in msg["keys"] if state.wants(client, k)}

    def _client_scheduler_info(self, client: str, msg: msgs.SchedulerInfoMsg) -> dict[str, Any]:
        return self.identity()

    def _client_id(self, client: str, msg: msgs.ClientIdMsg) -> str:
        return client

    async def _client_wait_for_workers(self, client: str, msg: msgs.WaitForWorkersMsg) -> None:
        await self.wait_for_workers(msg["n"])

    # ------------------------------------------- cluster managers (deploy/)
    def _client_adaptive_workload(
        self, client: str, msg: msgs.AdaptiveWorkloadMsg
    ) -> msgs.AdaptiveWorkloadReply:
        """What an adaptive decision needs: work by prefix, run times, workers."""
        runs: dict[str, list[float]] = {}
        for record in self.task_stream.recent(_ADAPTIVE_RUNS):
            if record.status == "memory":
                runs.setdefault(record.prefix, []).append(record.stop - record.start)
        durations = {prefix: sum(times) / len(times) for prefix, times in runs.items()}
        load = adaptive.measure(self.state, durations, key_prefix)
        reply: msgs.AdaptiveWorkloadReply = {
            "ready": load.ready, "processing": load.processing, "durations": load.durations,
            "workers": [
                {"address": w.address, "nthreads": w.nthreads, "memory_limit": w.memory_limit,
                 "nbytes": w.nbytes, "processing": w.processing}
                for w in load.workers
            ],
        }
        return reply

    # --------------------------------------------------- client operations
    def _client_get_who_has(self, client: str, msg: msgs.GetWhoHasMsg) -> dict[Key, list[str]]:
        tasks = self.state.tasks
        keys = msg["keys"] if msg["keys"] is not None else list(tasks)
        return {k: sorted(tasks[k].who_has) if k in tasks else [] for k in keys}

    def _client_has_what(self, client: str, msg: msgs.HasWhatMsg) -> dict[str, list[Key]]:
        workers = self.state.workers
        names = msg["workers"] if msg["workers"] is not None else list(workers)
        return {w: sorted(workers[w].has_what) if w in workers else [] for w in names}

    def _client_nthreads(self, client: str, msg: msgs.NthreadsMsg) -> dict[str, int]:
        workers = self.state.workers
        names = msg["workers"] if msg["workers"] is not None else list(workers)
        return {w: workers[w].nthreads for w in names if w in workers}

    # --------------------------------------------------------- diagnostics
    def _client_get_task_stream(self, client: str, msg: msgs.GetTaskStreamMsg) -> msgs.TaskStreamReply:
        stream = self.task_stream
        since = msg.get("since")
        if since is not None:
            records = stream.recent(msg.get("count"), since=since)
        else:
            records = stream.between(msg.get("start"), msg.get("stop"), msg.get("count"))
        return {"records": [r.as_dask() for r in records], "last_id": stream.last_id, "time": time.time()}

    def _client_get_worker_history(
        self, client: str, msg: msgs.GetWorkerHistoryMsg
    ) -> list[tuple[float, str, float, int]]:
        start = msg["start"]
        return [row for row in self.worker_history if row[0] >= start]

    async def _client_get_logs(self, client: str, msg: msgs.GetLogsMsg) -> Any:
        n = msg.get("n")
        if msg["scheduler"]:
            return process_logs().recent("Scheduler", n)
        targets = msg.get("workers") or list(self.worker_links)
        out: dict[str, Any] = {}

        async def one(address: str) -> None:
            link = self.worker_links.get(address)
            if link is None:
                return
            try:
                out[address] = await link.request("get-logs", n=n)
            except (CommClosedError, RemoteError) as exc:
                out[address] = [("ERROR", f"could not get the logs of {address}: {exc}")]

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(one, address)
        return out

    async def _client_profile(self, client: str, msg: msgs.ProfileMsg) -> dict[str, Any]:
        targets = msg.get("workers") or list(self.worker_links)
        trees: dict[str, Any] = {}

        async def one(address: str) -> None:
            link = self.worker_links.get(address)
            if link is None:
                return
            try:
                trees[address] = await link.request(
                    "profile", duration=msg["duration"], interval=msg["interval"]
                )
            except (CommClosedError, RemoteError) as exc:
                logger.warning("Could not profile worker %s: %s", address, exc)

        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(one, address)
        if msg["merge_workers"]:
            return profiling.merge(*trees.values())
        return trees


def _restricted_task(t: list[Any]) -> ev.NewTask:
    """A task of an update-graph with its options (protocol/messages.py's TaskOptions)."""
    options: msgs.TaskOptions = t[4]
    resources = options.get("resources")
    return ev.NewTask(
        key=t[0], run_spec=t[1], dependencies=tuple(t[2]), priority=int(t[3]),
        workers=tuple(options.get("workers", ())),
        allow_other_workers=bool(options.get("allow_other_workers", False)),
        resources={str(k): float(v) for k, v in resources.items()} if resources else None,
        retries=int(options.get("retries", 0)),
    )
