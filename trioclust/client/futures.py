"""Futures: the user's handle on one remote result.

Several ``Future`` objects may point at the same key; they share one
``FutureState``, which the client updates from the scheduler's messages in its
event loop thread. A state counts the Futures that refer to it; when the last
one is dropped the client releases the key on the cluster.

A ``Future`` holds the :class:`~trioclust.client.core.ClientCore` it belongs
to, and reaches the :class:`~trioclust.client.Client` (the synchronous bridge)
through it; this module imports neither at run time. ``Future.__del__`` may
run on any thread at any moment, garbage collection included, also while
that thread holds the client's locks (taking a reference, writing a
submission): it takes no lock, it only hands the state to
:meth:`ClientCore.release_ref`, which queues it (see core.py's notes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import anyio

from trioclust.client.remote_exceptions import raise_remote
from trioclust.errors import FutureCancelledError
from trioclust.protocol import Serialized
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.client.client import Client
    from trioclust.client.core import ClientCore

logger = logging.getLogger("trioclust.client")

_NO_VALUE = object()

#: Serializes the creation of a state's ``thread_event`` (one per state,
#: however many threads wait); never taken by a finalizer.
_thread_event_lock = threading.Lock()


class FutureState:
    """What the client knows of one key: status, inline value, error, waiters."""

    __slots__ = (
        "callbacks", "changes", "event", "exception", "key", "refs", "status", "text",
        "thread_event", "traceback", "type_name", "value",
    )

    def __init__(self, key: Key) -> None:
        self.key = key
        self.status = "pending"
        self.value: Any = _NO_VALUE
        self.type_name = ""
        self.exception: Any = None
        self.traceback: Any = None
        self.text = ""
        self.refs = 0
        self.changes = 0  # how many times the status changed (see wait_changed)
        self.event: anyio.Event | None = None
        # what threads of a synchronous client wait on (see Future.result)
        self.thread_event: threading.Event | None = None
        self.callbacks: list[Callable[[], None]] = []

    def done(self) -> bool:
        return self.status in ("finished", "error", "cancelled")

    @property
    def has_value(self) -> bool:
        return self.value is not _NO_VALUE

    async def wait(self) -> None:
        while not self.done():
            if self.event is None:
                self.event = anyio.Event()
            await self.event.wait()

    async def wait_changed(self, since: int) -> None:
        """Wait until ``changes`` is no longer ``since``."""
        while self.changes == since:
            if self.event is None:
                self.event = anyio.Event()
            await self.event.wait()

    def _changed(self) -> None:
        # the status is already set: a thread that registers its event after
        # this read sees it, one that registered before is woken here
        self.changes += 1
        if self.event is not None:
            self.event.set()
            self.event = None
        thread_event = self.thread_event
        if thread_event is not None:
            self.thread_event = None
            thread_event.set()
        if self.done():
            callbacks, self.callbacks = self.callbacks, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    logger.exception("Error in a done-callback of future %r", self.key)

    def finish(self, type_name: str, value: Any = _NO_VALUE) -> None:
        if isinstance(value, Serialized):
            try:
                value = value.deserialize()
            except Exception as exc:  # this key's error; the message's other keys are fine
                self.fail_here(exc)
                return
        self.status = "finished"
        self.type_name = type_name or self.type_name  # scatter knows it before any report
        self.value = value
        self._changed()

    def fail_here(self, exc: Exception) -> None:
        """The result came but could not be unpickled here: ``result()`` raises ``exc``."""
        self.fail(exc, None, f"{type(exc).__name__}: {exc}")

    def fail(self, exception: Any, traceback: Any, text: str) -> None:
        self.status = "error"
        self.exception, self.traceback, self.text = exception, traceback, text
        self._changed()

    def lose(self) -> None:
        """The data was lost; the scheduler recomputes it."""
        self.status = "pending"
        self.value = _NO_VALUE
        self._changed()

    def cancel(self, reason: str = "") -> None:
        self.status = "cancelled"
        self.text = reason
        self.value = _NO_VALUE
        self._changed()

    def reraise(self) -> None:
        """Raise the remote exception of an erred key, or CancelledError."""
        if self.status == "cancelled":
            raise FutureCancelledError(self.key, self.text)
        raise_remote(self.exception, self.traceback, self.text)


class Future:
    """A remote result, computing or done (``dask.distributed.Future``'s API).

    Await it (``await future``) with an asynchronous client, or call
    :meth:`result` with a synchronous one. Dropping every reference to a key's
    futures releases the key on the cluster.
    """

    __slots__ = ("__weakref__", "_core", "_state", "key")

    #: dask counts this object as a future inside graphs and ``delayed`` calls
    #: (an ``Alias`` of its key); see docs/collections.md
    __dask_future__ = True

    def __init__(self, key: Key, core: ClientCore, state: FutureState | None = None) -> None:
        self.key = key
        self._core = core
        self._state = core.take_ref(key, state)

    @property
    def client(self) -> Client:
        """The client this future belongs to."""
        return self._core.client

    @property
    def status(self) -> str:
        """``"pending"``, ``"finished"``, ``"error"`` or ``"cancelled"``."""
        return self._state.status

    def done(self) -> bool:
        """Whether the computation finished, failed or was cancelled."""
        return self._state.done()

    def cancelled(self) -> bool:
        """Whether this future was cancelled."""
        return self._state.status == "cancelled"

    def result(self, timeout: float | None = None) -> Any:
        """The result; raises the task's exception (with its remote traceback) if it failed.

        Args:
            timeout: seconds to wait before raising ``TimeoutError``.

        With an asynchronous client this returns an awaitable.
        """
        state = self._state
        core = self._core
        client = core.client
        if client.asynchronous:
            return client._sync(core.result_of, self, timeout)
        if state.status == "finished" and state.has_value:
            return state.value  # no trip through the event loop thread
        if threading.get_ident() != core.loop_thread:
            # wait in this thread, without a trip through the event loop
            # thread, for the usual case: a result that comes inline
            remaining = self._wait_in_thread(timeout)
            if state.status == "finished" and state.has_value:
                return state.value
            if remaining is not None:
                timeout = remaining
        return client._sync(core.result_of, self, timeout)

    def _wait_in_thread(self, timeout: float | None) -> float | None:
        """Block this (non-loop) thread until the state is done or ``timeout``
        passes; returns the time left (None: no timeout)."""
        state = self._state
        deadline = None if timeout is None else time.monotonic() + timeout
        while not state.done():
            with _thread_event_lock:  # one event per state, however many threads wait
                event = state.thread_event
                if event is None:
                    event = state.thread_event = threading.Event()
            if state.done():
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return 0.0
            event.wait(remaining)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def exception(self, timeout: float | None = None) -> Any:
        """The task's exception once it failed, None if it succeeded."""
        return self._core.client._sync(self._core.exception_of, self, timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        """The remote traceback (a traceback object) once it failed, else None."""
        return self._core.client._sync(self._core.traceback_of, self, timeout)

    def retry(self) -> Any:
        """Rerun this future's task if it erred, and the erred tasks it
        depends on (:meth:`Client.retry`). Awaitable with an asynchronous client."""
        return self.client.retry([self])

    def cancel(self) -> Any:
        """Cancel this future (see :meth:`Client.cancel`)."""
        return self._core.client.cancel([self])

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` once the future is done (at once if it already is).

        Callbacks run in the client's event loop thread: keep them quick, and
        do not block there waiting for other futures.
        """
        self._core.client._call_in_loop(self._core.add_done_callback, self, fn)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._core.result_of(self, None).__await__()

    def __del__(self) -> None:
        # lock-free: this may run inside the client's own locked sections
        try:
            core, state = self._core, self._state
        except AttributeError:  # __init__ failed before setting them
            return
        core.release_ref(state)

    def __repr__(self) -> str:
        state = self._state
        if state.status == "finished" and state.type_name:
            return f"<Future: finished, type: {state.type_name}, key: {self.key}>"
        if state.status == "error":
            return f"<Future: error, key: {self.key}, {state.text}>"
        return f"<Future: {state.status}, key: {self.key}>"

    def _repr_html_(self) -> str:
        colour = {"finished": "green", "error": "red", "cancelled": "gray"}.get(self.status, "orange")
        kind = f", type: {self._state.type_name}" if self._state.type_name else ""
        return (
            f"<strong>Future: {self.key}</strong> "
            f'<span style="color: {colour}">status: {self.status}</span>{kind}'
        )

    def __dask_tokenize__(self) -> Any:
        return ("trioclust.Future", self.key)

    def __reduce__(self) -> Any:
        raise TypeError(
            "A Future cannot be pickled on its own. Pass futures as arguments to submit or map "
            "(directly or inside lists, tuples and dicts) and the worker receives their values."
        )
