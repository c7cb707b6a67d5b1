"""Which task the calling code runs in: what ``get_worker()``, ``get_client()``,
``secede()`` and ``rejoin()`` read.

A worker runs a plain-function task on one of its threads and a coroutine
task in its event loop; it binds a :class:`TaskContext` around each (a
thread-local for threads, a context variable for coroutines, which trio's
tasks each get their own copy of). The client layer reads it to find the
worker's scheduler and its shared client; the runtime binds it. Neither
imports the other: this module is stdlib only.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trioclust.core.keys import Key

__all__ = ["TaskContext", "bind_thread", "current_task", "set_coroutine_task", "unbind_thread"]


@dataclass(slots=True)
class TaskContext:
    """One running task, as its own code sees it (made once per task, never
    changed: not frozen, which would cost every task more to make).

    Attributes:
        worker: The Worker running it.
        key: The task's key.
        generation: The worker's state generation it belongs to.
        in_thread: True for a plain function on a worker thread, False for a
            coroutine function in the worker's event loop.
    """

    worker: Any
    key: Key
    generation: int
    in_thread: bool

    def secede(self) -> bool:
        """Take the task out of the worker's thread count (see
        :func:`trioclust.secede`); False when it was out already."""
        result: bool = self.worker._secede(self.key, self.generation, self.in_thread)
        return result

    def rejoin(self) -> None:
        """Bring a seceded thread task back into the pool (see :func:`trioclust.rejoin`)."""
        if self.in_thread:
            self.worker._threads.rejoin()


_thread = threading.local()
_coroutine: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "trioclust_task", default=None
)

#: Makes the asynchronous client that coroutine tasks of a worker share, given
#: the worker: ``async with factory(worker) as client`` (the client layer sets it).
async_client_factory: Callable[[Any], Any] | None = None
#: Makes the synchronous client that thread tasks of a worker share, given
#: the worker and the seconds it may take to connect (None: the default).
sync_client_factory: Callable[[Any, float | None], Any] | None = None


def bind_thread(context: TaskContext) -> None:
    """The calling (worker) thread runs ``context``'s task from now on."""
    _thread.task = context


def unbind_thread() -> None:
    """The calling thread's task ended."""
    _thread.task = None


def set_coroutine_task(context: TaskContext) -> contextvars.Token[TaskContext | None]:
    """The current (worker loop) task runs ``context``'s coroutine."""
    return _coroutine.set(context)


def current_task() -> TaskContext | None:
    """The task the caller runs in, or None outside of tasks."""
    context: TaskContext | None = getattr(_thread, "task", None)
    if context is None:
        context = _coroutine.get()
    return context


