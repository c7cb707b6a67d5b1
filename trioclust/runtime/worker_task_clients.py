"""What a task running on a worker gets from it: its context (``get_worker()``,
``secede()``) and the clients its tasks share (``get_client()``): a mixin of
:class:`~trioclust.runtime.worker.Worker`.

Theory of operation
-------------------
Each task runs with a :class:`~trioclust.task_context.TaskContext` (bound to
its thread, or set for its coroutine) that points back here. ``secede()`` in
a thread task hands its place in the pool to a new thread
(``ThreadPool.secede``) and then, on the event loop, tells the core
(``Seceded``), which frees the task's slot and tells the scheduler; in a
coroutine task it tells the core at once.

Thread tasks share one synchronous client, made on first use under a lock
(``get_task_client``). Coroutine tasks share one asynchronous client, which
the worker starts before running a coroutine function whose code (nested
functions included) names ``get_client`` or ``worker_client``, in a task of
its own that opens it and closes it when the worker stops.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import trio

from trioclust import task_context
from trioclust.core import events as ev
from trioclust.core.keys import Key

if TYPE_CHECKING:
    from trioclust.runtime.thread_pool import ThreadPool

_CLIENT_NAMES = frozenset({"get_client", "worker_client"})


_names_client: dict[Any, bool] = {}  # by code object; bounded below


def _may_get_client(fn: Any) -> bool:
    """Whether coroutine function ``fn``'s code (nested functions included)
    names ``get_client`` or ``worker_client``: then the worker starts its
    asynchronous client for it before it runs (see ``get_task_client``)."""
    top = getattr(fn, "__code__", None)
    if top is None:
        return False
    known = _names_client.get(top)
    if known is not None:
        return known
    found = False
    codes = [top]
    while codes and not found:
        code = codes.pop()
        found = not _CLIENT_NAMES.isdisjoint(code.co_names)
        codes.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    if len(_names_client) > 1024:
        _names_client.clear()
    _names_client[top] = found
    return found


class TaskClients:
    """The Worker's side of its tasks' contexts and clients (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Worker's (and its Server's)

        name: str | None
        status: str
        _generation: int
        _threads: ThreadPool
        _token: trio.lowlevel.TrioToken | None
        _nursery: trio.Nursery | None
        _close_requested: trio.Event
        task_client: Any
        _task_client_lock: threading.Lock
        task_client_async: Any
        _task_client_async_lock: trio.Lock
        _task_client_async_closed: trio.Event | None

        def _handle(self, *events: Any) -> None: ...

    def _task_context(self, key: Key, generation: int, *, in_thread: bool) -> task_context.TaskContext:
        return task_context.TaskContext(self, key, generation, in_thread)

    def _secede(self, key: Key, generation: int, in_thread: bool) -> bool:
        """``secede()`` in task ``key``: a new thread takes this one's place,
        and the core frees its slot and tells the scheduler. False when the
        task had seceded already (a thread task; a coroutine's second
        secede is the core's no-op)."""
        if in_thread:
            if not self._threads.secede():
                return False
            token = self._token
            assert token is not None
            try:
                token.run_sync_soon(self._seceded, key, generation)
            except trio.RunFinishedError:
                pass
        else:
            self._seceded(key, generation)
        return True

    def _seceded(self, key: Key, generation: int) -> None:
        if generation == self._generation and self.status == "running":
            self._handle(ev.Seceded(key=key, stimulus_id=f"secede-{key}-{time.time()}"))

    def get_task_client(self, timeout: float | None = None) -> Any:
        """The client of the calling task (see ``get_client``): the
        worker's shared synchronous one on a thread, made on first use."""
        context = task_context.current_task()
        if context is not None and not context.in_thread:
            if self.task_client_async is None:
                raise RuntimeError(
                    "get_client() in a coroutine task needs the worker's asynchronous client, which "
                    "the worker starts before running a coroutine function that names get_client "
                    "or worker_client; call get_client() in the task's own function"
                )
            return self.task_client_async
        with self._task_client_lock:
            if self.status != "running":
                raise RuntimeError(f"Worker {self.name} is {self.status}: no client for its tasks")
            if self.task_client is None:
                factory = task_context.sync_client_factory
                if factory is None:  # pragma: no cover - importing trioclust sets it
                    raise RuntimeError("get_client() needs trioclust's client layer imported")
                self.task_client = factory(self, timeout)
            return self.task_client

    async def _start_task_client_async(self) -> None:
        async with self._task_client_async_lock:
            if self.task_client_async is None and task_context.async_client_factory is not None:
                assert self._nursery is not None
                self.task_client_async = await self._nursery.start(self._serve_task_client_async)

    async def _serve_task_client_async(self, *, task_status: trio.TaskStatus[Any]) -> None:
        """Own the coroutine tasks' client: open it here, close it when the worker stops."""
        factory = task_context.async_client_factory
        assert factory is not None
        closed = self._task_client_async_closed = trio.Event()
        try:
            async with factory(self) as client:
                task_status.started(client)
                await self._close_requested.wait()
        finally:
            self.task_client_async = None
            closed.set()
