"""The shape every long-lived server shares: ``serve()`` plus ``async with``.

A server (Scheduler, Worker, Nanny) is written once, for trio, as
``serve(*, task_status)``. This base class gives it the two ways in:

* ``await nursery.start(server.serve)`` from trio code that owns a nursery;
* ``async with server:`` which, under trio, opens a nursery of its own and,
  under asyncio (or anything that is not trio), runs the same ``serve()`` in a
  ``trio.run`` on a thread the server owns. The user's code does not change;
  leaving the block closes the server gracefully and joins that thread.

``close()`` waits for ``serve()`` to end; on a server whose ``serve()`` never
ran there is nothing to wait for, so it just marks it closed (every
subclass's ``serve`` is wrapped to record that it was entered).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

import sniffio
import trio

from trioclust import config

logger = logging.getLogger("trioclust.runtime")


class Server:
    """Base class: subclasses implement :meth:`serve` and call :meth:`_request_close`."""

    _nursery_manager: Any = None
    _thread: threading.Thread | None = None
    _thread_token: trio.lowlevel.TrioToken | None = None

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
        if self._thread is not None and sniffio.current_async_library() != "trio":
            await self._close_threaded()
            return
        self._request_close()
        if not self._serve_entered:  # it never served: nothing to wait for
            self.status = "closed"
            self._closed.set()
            return
        await self._closed.wait()

    async def wait_closed(self) -> None:
        """Return once :meth:`serve` has ended, for whatever reason."""
        if self._thread is not None and sniffio.current_async_library() != "trio":
            await self._join_thread()
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
        await self._start_threaded()
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
        await self._close_threaded()
        return None

    # ----------------------------------------- running under a foreign loop
    async def _start_threaded(self) -> None:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        self._thread_done: asyncio.Future[None] = loop.create_future()

        def report(fut: asyncio.Future[None], exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        async def main() -> None:
            self._thread_token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.serve)
                loop.call_soon_threadsafe(report, started, None)

        def run() -> None:
            error: BaseException | None = None
            try:
                trio.run(main)
            except BaseException as exc:  # reported to the awaiting loop
                error = exc
            loop.call_soon_threadsafe(report, started, error)
            loop.call_soon_threadsafe(report, self._thread_done, error)

        self._thread = threading.Thread(target=run, name=f"trioclust-{type(self).__name__}")
        self._thread.start()
        try:
            await started
        except BaseException as exc:
            await self._join_thread_quietly()
            raise _single_error(exc) from None

    async def _close_threaded(self) -> None:
        token = self._thread_token
        if token is not None and self._thread is not None and self._thread.is_alive():
            try:
                trio.from_thread.run_sync(self._request_close, trio_token=token)
            except trio.RunFinishedError:
                pass
        await self._join_thread()

    async def _join_thread_quietly(self) -> None:
        try:
            await self._join_thread()
        except BaseException:  # the start error is what the caller needs to see
            pass

    async def _join_thread(self) -> None:
        if self._thread is None:
            return
        try:
            await asyncio.wait_for(
                asyncio.shield(self._thread_done), config.get_float("runtime.close-timeout") * 4
            )
        finally:
            # the thread has reported its end: this join is immediate
            self._thread.join(timeout=1)


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
