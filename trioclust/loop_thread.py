"""Event loops on threads of their own, and crossing into them from other threads.

Theory of operation
-------------------
Three things in trioclust run a trio loop on a thread: the synchronous
``Client`` and ``LocalCluster`` (their caller is plain code), and a
``Server`` entered with ``async with`` under asyncio (its caller's loop is
not trio). All three use :class:`LoopThread`: a daemon thread that runs
``anyio.run(..., backend="trio")`` with a :class:`~anyio.from_thread.BlockingPortal`
into it. Code in ``client/`` names the backend as a string and never imports
trio; the servers' code runs inside the loop and uses trio freely.

:class:`HostedContext` is the synchronous ``with``: it enters an async context
manager (a ``ClientCore``, a ``LocalCluster``) in a task on a loop thread and,
on :meth:`HostedContext.close`, exits it there. An object opened this way is
remembered for interpreter exit. At exit the ``atexit`` handler closes what is
still open, newest first, so a client closes before the cluster it talks to
(a cluster closed first would look like a lost connection to its clients, and
a client left inside a cluster's loop would keep that loop from ending).

Why not ``anyio.from_thread.start_blocking_portal``: its thread is not a
daemon, and the interpreter joins such threads *before* it runs ``atexit``
handlers, so a script that forgot ``client.close()`` would hang at exit.

Every wait here is bounded: exiting a hosted context waits at most
``4 * runtime.close-timeout`` (what a cluster's own shielded close may take),
and stopping a loop cancels whatever still runs in it and joins the thread for
at most ``runtime.close-timeout``; a thread that overstays is logged and left
behind (it is a daemon, so it never holds up interpreter exit).

This module sits beside ``config``, below every layer: it imports only anyio,
so ``client/``, ``runtime/``, ``deploy/`` and ``transport/`` may all use it,
where ``comm/`` (connections) or ``runtime/`` (trio servers) could not serve
``client/`` and ``transport/`` both.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.from_thread import BlockingPortal

from trioclust import config

__all__ = ["CallSoon", "HostedContext", "LoopThread", "call_soon_here", "wake_soon"]

logger = logging.getLogger("trioclust.loop_thread")

CallSoon = Callable[[Callable[[], object]], object]


def call_soon_here() -> CallSoon:
    """A thread-safe, non-blocking "run this soon" into the running trio or asyncio loop."""
    native = anyio.lowlevel.current_token().native_token
    call_soon: CallSoon | None = getattr(native, "run_sync_soon", None)  # a TrioToken
    if call_soon is None:
        call_soon = native.call_soon_threadsafe  # type: ignore[attr-defined]  # an asyncio loop
    return call_soon


def wake_soon(call_soon: CallSoon, fn: Callable[[], object]) -> None:
    """``call_soon(fn)``, doing nothing if that loop has ended."""
    try:
        call_soon(fn)
    except RuntimeError:  # trio.RunFinishedError, or a closed asyncio loop
        pass


def _close_timeout() -> float:
    return config.get_float("runtime.close-timeout")


class LoopThread:
    """A daemon thread running an event loop, with a :class:`BlockingPortal` into it.

    Args:
        name: the thread's name.
        backend: the anyio backend the loop runs (``"trio"``).
    """

    def __init__(self, *, name: str, backend: str = "trio") -> None:
        self.name = name
        self._backend = backend
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self._call_soon: CallSoon | None = None
        self._stopping: anyio.Event | None = None

    @property
    def portal(self) -> BlockingPortal:
        """The portal into the running loop."""
        if self._portal is None:
            raise RuntimeError(f"the event loop thread {self.name} is not running")
        return self._portal

    def start(self) -> BlockingPortal:
        """Start the thread and return the portal once its loop runs."""

        async def main() -> None:
            self._call_soon = call_soon_here()
            self._stopping = stopping = anyio.Event()
            async with BlockingPortal() as portal:
                self._portal = portal
                self._ready.set()
                await stopping.wait()
                await portal.stop(cancel_remaining=True)

        def run() -> None:
            try:
                anyio.run(main, backend=self._backend)
            except BaseException as exc:  # reported to start()'s caller
                self._error = exc
            finally:
                self._ready.set()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None or self._portal is None:
            raise RuntimeError(f"the event loop of {self.name} did not start: {self._error!r}")
        return self._portal

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the loop, cancelling what still runs in it, and join the thread.

        Args:
            timeout: how long to wait for the thread; default ``runtime.close-timeout``.

        Returns:
            Whether the thread has ended (on False it is logged and left running).
        """
        self._portal = None
        thread = self._thread
        if thread is None:
            return True
        if self._call_soon is not None and self._stopping is not None:
            # not through the portal: this works from any thread, a trio loop's included
            wake_soon(self._call_soon, self._stopping.set)
        if thread is threading.current_thread():
            return False  # stopped from inside its own loop: it ends once that call returns
        thread.join(_close_timeout() if timeout is None else timeout)
        if thread.is_alive():
            logger.warning("The event loop thread %s did not stop in time; leaving it", self.name)
            return False
        return True


class _Closable(Protocol):
    def close(self) -> Any: ...


class HostedContext:
    """An async context manager entered, and later exited, in a :class:`LoopThread`'s loop.

    The synchronous ``Client`` and ``LocalCluster`` are opened this way.

    Args:
        owner: what interpreter exit closes (with ``owner.close()``) if it is still open.
        manager: the async context manager to enter.
        name: the loop thread's name, when it starts one.
        loop: a running loop thread to use instead of starting one; it is
            then left running by :meth:`close`.

    Raises:
        BaseException: whatever entering ``manager`` raised.
    """

    def __init__(
        self,
        owner: _Closable,
        manager: AbstractAsyncContextManager[Any],
        *,
        name: str,
        loop: LoopThread | None = None,
    ) -> None:
        self.owns_loop = loop is None
        self.loop = loop if loop is not None else LoopThread(name=name)
        if self.owns_loop:
            self.loop.start()
        self._entered: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._exit: anyio.Event | None = None
        try:
            self._task = self.loop.portal.start_task_soon(self._run, manager)
            concurrent.futures.wait(
                [self._entered, self._task], return_when=concurrent.futures.FIRST_COMPLETED
            )
            if not self._entered.done():
                self._task.result()  # raises what entering raised
        except BaseException:
            if self.owns_loop:
                self.loop.stop()
            raise
        self._key = _remember(owner)

    async def _run(self, manager: AbstractAsyncContextManager[Any]) -> None:
        self._exit = anyio.Event()
        async with manager:
            self._entered.set_result(None)
            await self._exit.wait()

    def close(self) -> None:
        """Exit the context manager in its loop, then stop the loop if it is ours.

        Waits at most ``4 * runtime.close-timeout`` for the exit; an error it
        raises is raised here.
        """
        _forget(self._key)
        try:
            try:
                assert self._exit is not None
                self.loop.portal.start_task_soon(self._exit.set)
            except RuntimeError:
                pass  # the loop has stopped already, which exited the manager
            try:
                self._task.result(4 * _close_timeout())
            except concurrent.futures.CancelledError:
                pass  # the loop was stopped under it: the exit ran on the cancellation
            except TimeoutError:
                logger.warning("Closing in %s did not finish in time", self.loop.name)
        finally:
            if self.owns_loop:
                self.loop.stop()


# ------------------------------------------------------ interpreter exit

_open: weakref.WeakValueDictionary[int, _Closable] = weakref.WeakValueDictionary()
_keys = itertools.count()


def _remember(owner: _Closable) -> int:
    key = next(_keys)
    _open[key] = owner
    return key


def _forget(key: int) -> None:
    _open.pop(key, None)


@atexit.register
def _close_open() -> None:
    """Close whatever is still open, newest first (clients before their clusters)."""
    for key in sorted(_open.keys(), reverse=True):
        owner = _open.get(key)
        if owner is None:
            continue
        try:
            owner.close()
        except Exception:  # the interpreter is exiting: nothing useful to raise to
            logger.debug("closing %r at exit failed", owner, exc_info=True)
