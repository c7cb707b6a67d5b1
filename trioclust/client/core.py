"""The client's engine: one link to the scheduler, futures' states, data fetches.

Everything here runs in the client's event loop thread (the caller's loop for
an asynchronous client; the blocking portal's thread for a synchronous one)
and uses anyio only, so it works under trio and asyncio alike. The only entry
point safe from any thread is :meth:`ClientCore.release_ref`, which the
``Future.__del__`` of a dropped future calls.

Release ordering: a key dropped by the user is queued, and every message the
client sends first flushes that queue, so a release can never overtake a new
submission of the same key.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from trioclust import config
from trioclust.client.errors import SchedulerLostError, rebuild_exception
from trioclust.client.futures import Future, FutureState
from trioclust.comm import CommClosedError, Link, RemoteError
from trioclust.comm import connect as comm_connect
from trioclust.comm.pool import ConnectionPool
from trioclust.protocol import ProtocolError, Serialized, serialize

if TYPE_CHECKING:
    from trioclust.client.client import Client

logger = logging.getLogger("trioclust.client")


def _load(value: Any) -> Any:
    return value.deserialize() if isinstance(value, Serialized) else value


class ClientCore:
    """The asynchronous machinery behind :class:`trioclust.Client`."""

    def __init__(
        self,
        client: Client,
        address: str,
        *,
        name: str,
        timeout: float | None,
        wake_from_thread: Callable[[Callable[[], Any]], None] | None = None,
    ) -> None:
        self.client = client
        self.address = address
        self.name = name
        self.timeout = timeout
        self.id = ""
        self.status = "created"
        self._wake_from_thread = wake_from_thread
        self._states: dict[str, FutureState] = {}
        self._lock = threading.Lock()
        self._pending_release: deque[str] = deque()
        self._release_wakeup: anyio.Event | None = None
        self._loop_thread = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._link: Link | None = None
        self._pool: ConnectionPool | None = None
        self._priority = 0

    # --------------------------------------------------------- life cycle
    async def __aenter__(self) -> ClientCore:
        self._loop_thread = threading.get_ident()
        self._release_wakeup = anyio.Event()
        comm = await comm_connect(self.address, role="client", name=self.name, timeout=self.timeout)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            self._link = Link(
                comm,
                {
                    "key-in-memory": self._on_key_in_memory,
                    "task-erred": self._on_task_erred,
                    "lost-data": self._on_lost_data,
                },
                name=f"client {self.name} -> scheduler",
            )
            await self._task_group.start(self._run_link, self._link)
            self.id = await self._link.request("client-id")
            self._pool = ConnectionPool(self._task_group, role="client", name=self.id)
            self._task_group.start_soon(self._release_flusher)
        except BaseException as exc:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self.status = "running"
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self.status in ("closing", "closed") or self._task_group is None:
            return
        self.status = "closing"
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(config.get_float("runtime.close-timeout")):
                self._flush_releases()
                with self._lock:
                    states = list(self._states.values())
                for state in states:
                    if not state.done():
                        state.cancel("the client was closed")
                if self._pool is not None:
                    await self._pool.aclose()
                if self._link is not None:
                    await self._link.aclose()
        # exited at the nesting level it was entered at (__aenter__), never
        # inside the scopes above: that is what keeps the scope stack intact
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        self.status = "closed"

    async def _run_link(self, link: Link, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await link.run(task_status=task_status)
        finally:
            if self.status == "running":
                self.status = "disconnected"
                logger.error("Lost the connection to the scheduler at %s", self.address)
                error = SchedulerLostError(
                    f"The connection to the scheduler at {self.address} broke; the results of "
                    f"pending futures are lost. Check that the scheduler is running, then "
                    f"create a new Client."
                )
                with self._lock:
                    states = list(self._states.values())
                for state in states:
                    if not state.done():
                        state.fail(error, None, str(error))

    # ------------------------------------------------------ future states
    def state_for(self, key: str) -> FutureState:
        """The shared state of ``key``, created on first use."""
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = FutureState(key)
            return state

    def release_ref(self, state: FutureState) -> None:
        """A Future of ``state`` was dropped (any thread). The last one releases the key."""
        with self._lock:
            state.refs -= 1
            if state.refs > 0 or self._states.get(state.key) is not state:
                return
            del self._states[state.key]
            if self.status != "running":
                return
            self._pending_release.append(state.key)
        if threading.get_ident() == self._loop_thread:
            if self._release_wakeup is not None:
                self._release_wakeup.set()
        elif self._wake_from_thread is not None:
            try:
                self._wake_from_thread(self._flush_releases)
            except RuntimeError:
                pass  # the loop is closing; close() flushes

    async def _release_flusher(self) -> None:
        while True:
            assert self._release_wakeup is not None
            await self._release_wakeup.wait()
            self._release_wakeup = anyio.Event()
            self._flush_releases()

    def _flush_releases(self) -> None:
        keys: list[str] = []
        while self._pending_release:
            keys.append(self._pending_release.popleft())
        if keys and self._link is not None and not self._link.closed:
            try:
                self._link.send({"op": "release-keys", "keys": keys})
            except CommClosedError:
                pass

    def send(self, msg: dict[str, Any]) -> None:
        """Send to the scheduler, after any queued releases."""
        if self.status != "running" or self._link is None:
            raise SchedulerLostError(
                f"This client is {self.status}: it cannot talk to the scheduler at {self.address}."
            )
        self._flush_releases()
        self._link.send(msg)

    # ---------------------------------------------------- scheduler events
    def _on_key_in_memory(self, msg: dict[str, Any]) -> None:
        state = self._states.get(msg["key"])
        if state is not None:
            value = msg.get("value")
            if value is None:
                state.finish(msg.get("type") or "")
            else:
                state.finish(msg.get("type") or "", value)

    def _on_task_erred(self, msg: dict[str, Any]) -> None:
        state = self._states.get(msg["key"])
        if state is not None:
            state.fail(msg.get("exception"), msg.get("traceback"), msg.get("text") or "")

    def _on_lost_data(self, msg: dict[str, Any]) -> None:
        state = self._states.get(msg["key"])
        if state is not None:
            state.lose()

    # ------------------------------------------------------------- submit
    def next_priority(self, user_priority: int) -> int:
        """Lower runs first: the user's priority first, then submission order."""
        self._priority += 1
        return -user_priority * (1 << 40) + self._priority

    def submit_tasks(
        self, tasks: list[tuple[str, Serialized, list[str], int]], wanted: list[str]
    ) -> list[Future]:
        """Create the futures for ``wanted`` and send the graph (loop thread)."""
        futures = [Future(key, self.client, self.state_for(key)) for key in wanted]
        # a key the scheduler already knows keeps its state there; resending is harmless
        self.send({"op": "update-graph", "tasks": [list(t) for t in tasks], "wanted": wanted})
        return futures

    # ------------------------------------------------------------- results
    async def result_of(self, future: Future, timeout: float | None) -> Any:
        state = future._state
        with anyio.fail_after(timeout):
            while True:
                await state.wait()
                if state.status != "finished":
                    state.reraise()
                if state.has_value:
                    return state.value
                values = await self._fetch([state])
                if state.key in values:
                    return values[state.key]

    async def exception_of(self, future: Future, timeout: float | None) -> Any:
        state = future._state
        with anyio.fail_after(timeout):
            await state.wait()
        if state.status == "error":
            return rebuild_exception(state.exception, state.traceback, state.text)
        if state.status == "cancelled":
            try:
                state.reraise()
            except Exception as exc:
                return exc
        return None

    async def traceback_of(self, future: Future, timeout: float | None) -> Any:
        exc = await self.exception_of(future, timeout)
        return None if exc is None else exc.__traceback__

    def add_done_callback(self, future: Future, fn: Callable[[Future], Any]) -> None:
        state = future._state

        def call() -> None:
            fn(future)

        if state.done():
            call()
        else:
            state.callbacks.append(call)

    async def gather_states(self, states: Iterable[FutureState], errors: str) -> dict[str, Any]:
        """Values of finished keys; raise (or skip) erred ones; wait for pending ones."""
        states = list({id(s): s for s in states}.values())
        values: dict[str, Any] = {}
        while states:
            for state in states:
                await state.wait()
            to_fetch = []
            for state in states:
                if state.status != "finished":
                    if errors == "raise":
                        state.reraise()
                    continue
                if state.has_value:
                    values[state.key] = state.value
                else:
                    to_fetch.append(state)
            values.update(await self._fetch(to_fetch))
            # keys lost while fetching are being recomputed: wait for them again
            states = [s for s in to_fetch if s.key not in values]
        return values

    async def _fetch(self, states: list[FutureState]) -> dict[str, Any]:
        """Get values from the workers holding them. Keys not found are left out."""
        if not states:
            return {}
        assert self._link is not None
        assert self._pool is not None
        keys = [s.key for s in states]
        who_has: dict[str, list[str]] = await self._link.request("who-has", keys=keys)
        by_worker: dict[str, list[str]] = {}
        for key in keys:
            holders = who_has.get(key) or []
            if holders:
                by_worker.setdefault(random.choice(holders), []).append(key)
        values: dict[str, Any] = {}

        async def from_worker(worker: str, worker_keys: list[str]) -> None:
            assert self._pool is not None
            try:
                link = await self._pool.get(worker)
                reply = await link.request("get-data", keys=worker_keys)
            except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
                logger.info("Could not get %d keys from %s: %s", len(worker_keys), worker, exc)
                self._pool.forget(worker)
                return
            for key, value in reply["data"].items():
                values[key] = _load(value)

        async with anyio.create_task_group() as tg:
            for worker, worker_keys in by_worker.items():
                tg.start_soon(from_worker, worker, worker_keys)
        if len(values) < len(keys):
            # the scheduler will notice the loss and recompute; give it a moment
            await anyio.sleep(0.01)
        return values

    # ------------------------------------------------------------ requests
    async def request(self, op: str, **kwargs: Any) -> Any:
        """A request to the scheduler; a remote exception is re-raised as itself."""
        if self._link is None or self.status != "running":
            raise SchedulerLostError(f"This client is {self.status}; it cannot reach {self.address}.")
        self._flush_releases()
        try:
            return await self._link.request(op, **kwargs)
        except RemoteError as exc:
            raise rebuild_exception(exc.exception, None, exc.text) from None

    async def scatter(
        self, data: dict[str, Any], workers: list[str] | None, broadcast: bool
    ) -> list[Future]:
        """Send values straight to workers, then tell the scheduler who has them."""
        assert self._pool is not None
        if not workers:
            info = await self.request("scheduler-info")
            workers = sorted(info["workers"])
        if not workers:
            raise ValueError(
                "scatter needs at least one worker, and the scheduler at "
                f"{self.address} has none. Start workers (or wait_for_workers) first."
            )
        futures = [Future(key, self.client, self.state_for(key)) for key in data]
        targets: dict[str, dict[str, Any]] = {}
        start = random.randrange(len(workers))
        for i, (key, value) in enumerate(data.items()):
            chosen = workers if broadcast else [workers[(start + i) % len(workers)]]
            for worker in chosen:
                targets.setdefault(worker, {})[key] = serialize(value)
        who_has: dict[str, list[str]] = {}
        nbytes: dict[str, int] = {}

        async def send(worker: str, values: dict[str, Any]) -> None:
            assert self._pool is not None
            link = await self._pool.get(worker)
            await link.request("update-data", data=values)
            for key, value in values.items():
                who_has.setdefault(key, []).append(worker)
                nbytes[key] = value.nbytes

        async with anyio.create_task_group() as tg:
            for worker, values in targets.items():
                tg.start_soon(send, worker, values)
        await self.request("update-data", who_has=who_has, nbytes=nbytes)
        return futures

    def cancel(self, futures: list[Future], reason: str = "cancelled by the user") -> None:
        keys = []
        with self._lock:
            for future in futures:
                state = future._state
                if self._states.get(state.key) is state:
                    del self._states[state.key]
                    keys.append(state.key)
        for future in futures:
            if future._state.status != "cancelled":
                future._state.cancel(reason)
        if keys and self.status == "running":
            self.send({"op": "release-keys", "keys": keys})
