"""The shape every long-lived server shares: ``serve()`` plus ``async with``.

A server (Scheduler, Worker, Nanny) is written once, for trio, as
``serve(*, task_status)``. This base class gives it the two ways in:

* ``await nursery.start(server.serve)`` from trio code that owns a nursery;
* ``async with server:`` which, under trio, opens a nursery of its own and,
  under asyncio (or anything that is not trio), runs the same ``serve()`` in a
  trio loop on a :class:`~trioclust.loop_thread.LoopThread` the server owns.
  The user's code does not change; leaving the block closes the server
  gracefully and stops that thread. :meth:`Server._call_hosted` awaits any
  other coroutine in that loop from the asyncio side.

``close()`` waits for ``serve()`` to end; on a server whose ``serve()`` never
ran there is nothing to wait for, so it just marks it closed (every
subclass's ``serve`` is wrapped to record that it was entered).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

import sniffio
import trio

from trioclust import config
from trioclust.loop_thread import LoopThread

_T = TypeVar("_T")

logger = logging.getLogger("trioclust.runtime")


class Server:
    """Base class: subclasses implement :meth:`serve` and call :meth:`_request_close`."""

    _nursery_manager: Any = None
    _hosting: LoopThread | None = None  # the loop thread serve() runs in, under asyncio

    _serve_entered = False

    def __init__(self) -> None:
        self._close_requested = trio.Event()
        self._closed = trio.Event()
        self.status = "created"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        serve = cls.__dict__.get("serve")
        if serve is not None and not getattr(serve, "_records_entry", False):
            cls.serve = _recording_entry(serve)  # type: ignore[method-assign]

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ closing
    def _request_close(self) -> None:
        if self.status not in ("closing", "closed"):
            self.status = "closing"
        self._close_requested.set()

    async def close(self) -> None:
        """Close gracefully and wait until :meth:`serve` has ended."""
        if self._in_foreign_loop():
            await self._close_hosted()
            return
        self._request_close()
        if not self._serve_entered:  # it never served: nothing to wait for
            self.status = "closed"
            self._closed.set()
            return
        await self._closed.wait()

    async def wait_closed(self) -> None:
        """Return once :meth:`serve` has ended, for whatever reason."""
        if self._in_foreign_loop():
            await self._wait_hosted()
            return
        await self._closed.wait()

    # ------------------------------------------------------ context manager
    async def __aenter__(self) -> Self:
        if sniffio.current_async_library() == "trio":
            self._nursery_manager = trio.open_nursery()
            nursery = await self._nursery_manager.__aenter__()
            try:
                await nursery.start(self.serve)
            except BaseException as exc:
                manager, self._nursery_manager = self._nursery_manager, None
                try:
                    await manager.__aexit__(type(exc), exc, exc.__traceback__)
                except BaseException as group:
                    raise _single_error(group) from None
                raise _single_error(exc) from None
            return self
        await self._start_hosted()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._nursery_manager is not None:
            self._request_close()
            manager, self._nursery_manager = self._nursery_manager, None
            return bool(await manager.__aexit__(exc_type, exc, tb))
        await self._close_hosted()
        return None

    # ----------------------------------------- running under a foreign loop
    def _in_foreign_loop(self) -> bool:
        """Whether :meth:`serve` runs on this server's loop thread while the caller's loop is not trio."""
        return self._hosting is not None and sniffio.current_async_library() != "trio"

    async def _start_hosted(self) -> None:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        self._hosted_done: asyncio.Future[None] = loop.create_future()

        def report(fut: asyncio.Future[None], exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        def report_soon(fut: asyncio.Future[None], exc: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the asyncio loop is closed
                loop.call_soon_threadsafe(report, fut, exc)

        async def host() -> None:  # in the loop thread
            error: BaseException | None = None
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.serve)
                    report_soon(started, None)
            except BaseException as exc:  # reported to the awaiting loop
                error = exc
            report_soon(started, error)
            report_soon(self._hosted_done, error)
            if isinstance(error, trio.Cancelled):
                raise error

        self._hosting = LoopThread(name=f"trioclust-{type(self).__name__}")
        self._hosting.start().start_task_soon(host)
        try:
            await started
        except BaseException as exc:
            with contextlib.suppress(BaseException):  # the start error is what the caller needs
                await self._close_hosted()
            raise _single_error(exc) from None

    async def _close_hosted(self) -> None:
        assert self._hosting is not None
        with contextlib.suppress(RuntimeError):  # its loop has ended already
            self._hosting.portal.start_task_soon(self._request_close)
        try:
            await asyncio.wait_for(
                asyncio.shield(self._hosted_done), config.get_float("runtime.close-timeout") * 4
            )
        finally:
            self._hosting.stop()  # serve() has ended: the thread ends at once

    async def _wait_hosted(self) -> None:
        assert self._hosting is not None
        try:
            await asyncio.shield(self._hosted_done)
        finally:
            if self._hosted_done.done():
                self._hosting.stop()

    async def _call_hosted(
        self,
        async_fn: Callable[..., Awaitable[_T]],
        *args: Any,
        ended: Callable[[], Exception] | None = None,
    ) -> _T:
        """Await ``async_fn(*args)`` in this server's loop thread, from the caller's asyncio loop.

        Cancelling the caller cancels the call there.

        Args:
            async_fn: the coroutine function to run in the server's loop.
            *args: its arguments.
            ended: the error to raise when the server's loop has ended, or
                ends during the call; default a ``RuntimeError``.
        """
        assert self._hosting is not None

        def ended_error() -> Exception:
            return ended() if ended is not None else RuntimeError(f"{self!r} has ended")

        async def run() -> _T:
            try:
                return await async_fn(*args)
            except trio.Cancelled:  # the loop is stopping, or our caller was cancelled
                raise ended_error() from None

        try:
            future = self._hosting.portal.start_task_soon(run)
        except RuntimeError:
            raise ended_error() from None
        return await asyncio.wrap_future(future)


def _single_error(exc: BaseException) -> BaseException:
    """The one real error inside nested exception groups, so that a failed start
    raises what went wrong (``OSError: Timed out trying to connect ...``) rather
    than a group wrapping it. Groups with several real errors stay groups."""
    while isinstance(exc, BaseExceptionGroup):
        real = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(real) != 1:
            return exc
        exc = real[0]
    return exc


def _recording_entry(
    serve: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Coroutine[Any, Any, None]]:
    """``serve``, recording on the server that it was entered."""

    @functools.wraps(serve)
    async def wrapped(self: Server, *args: Any, **kwargs: Any) -> None:
        self._serve_entered = True
        await serve(self, *args, **kwargs)

    wrapped._records_entry = True  # type: ignore[attr-defined]
    return wrapped
