"""A worker's actor calls: one thread runs them in order and writes each reply.

Theory of operation
-------------------
A client calls an actor's method with a plain ``actor-execute`` message (an
attribute read: ``actor-attribute``) carrying ``call``, an id its link
expects a reply to (``Link.expect_reply``). The link's handler, in the order
the messages came, puts the call on one queue; one thread per worker (Dask's
single actor thread) takes the calls off it one at a time and runs them:
plain methods and attribute reads there, coroutine methods handed to the
worker's event loop, where they run concurrently with the calls after
them (each started before the thread takes the next call).

The thread writes each reply itself when the link to the caller is idle
(``Link.send_from_thread``), so a call's round trip crosses the worker's
event loop once, to read the call; otherwise it hands the reply to the loop,
which sends it in order with the link's other messages. The thread starts
with the first call and stops when the worker closes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from trioclust.comm import Link
from trioclust.comm.link import error_reply
from trioclust.errors import CommClosedError
from trioclust.protocol import serialize

__all__ = ["ActorCalls"]

logger = logging.getLogger("trioclust.worker")

_Call = tuple[Link, int, Callable[[], Any], bool]  # link, reply id, call, coroutine


def _ok(rid: int, value: Any) -> dict[str, Any]:
    return {"op": "reply", "id": rid, "status": "OK", "result": serialize(value)}


class ActorCalls:
    """The actor thread of one worker and its queue.

    Args:
        name: the worker's name, for the thread's name.
        token: the worker's event loop, for replies the thread cannot write.
        nursery: where coroutine methods run.
    """

    def __init__(self, name: str, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self._name = name
        self._token = token
        self._nursery = nursery
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, link: Link, rid: int, fn: Callable[[], Any], coroutine: bool) -> None:
        """Queue a call (in the event loop, in the order calls came)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"trioclust-actors-{self._name}", daemon=True
            )
            self._thread.start()
        self._queue.put((link, rid, fn, coroutine))

    async def aclose(self, timeout: float) -> None:
        """Stop the thread once the calls queued before have run (at most ``timeout`` s)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await trio.to_thread.run_sync(thread.join, timeout)

    # ------------------------------------------------------ on the actor thread
    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            link, rid, fn, coroutine = item
            if coroutine:
                # started in the loop before the next call runs here (it then
                # runs concurrently with the calls after it, as in Dask)
                try:
                    trio.from_thread.run(self._nursery.start, self._run_async, link, rid, fn, trio_token=self._token)
                except (trio.RunFinishedError, trio.Cancelled, RuntimeError):
                    return  # the worker is closing (its nursery is closed)
                continue
            try:
                reply = _ok(rid, fn())
            except Exception as exc:
                reply = error_reply(rid, exc)
            if link.send_from_thread([reply]):
                if link.comm.unsent:  # the kernel took only part: the loop's writer sends the rest
                    self._in_loop(link.wake)
            else:
                self._in_loop(partial(_send, link, reply))

    def _in_loop(self, fn: Callable[[], object]) -> None:
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            pass  # the worker is gone, and the caller's link with it

    # -------------------------------------------------------- on the event loop
    async def _run_async(
        self,
        link: Link,
        rid: int,
        fn: Callable[[], Awaitable[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        try:
            reply = _ok(rid, await fn())
        except Exception as exc:
            reply = error_reply(rid, exc)
        _send(link, reply)


def _send(link: Link, reply: dict[str, Any]) -> None:
    try:
        link.send(reply)
    except CommClosedError:
        pass  # the caller went away
