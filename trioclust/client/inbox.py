"""Calls into the client's event loop from any thread, without waiting.

A synchronous client's user code runs on its own thread while the client's
engine runs in an event loop on another. ``submit`` must not wait for the
loop (a burst of submits would then cost a thread round trip each), and a
``Future.__del__`` may run on any thread at any time. Both queue a call here:
the call goes on a deque, and the first call of a burst writes one byte to a
socket pair the loop waits on. The loop then runs everything queued, in
order, so a burst of submits leaves as one batch and a release never
overtakes an earlier submission. ``call_soon`` takes no lock: a finalizer
may call it on a thread that is inside this client's locked sections.

A drain ends with the ``after_drain`` hook; if calls were queued meanwhile,
it runs them and the hook again, so the hook's last run sees an empty queue.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from trioclust.comm.link import writes_deferred

logger = logging.getLogger("trioclust.client")


class ThreadInbox:
    """A FIFO of calls for the loop, fed from any thread."""

    def __init__(self, after_drain: Callable[[], Any] | None = None) -> None:
        self._after_drain = after_drain
        self._calls: deque[Callable[[], Any]] = deque()
        self._pending = False
        self._closed = False
        self._draining = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn()`` to run in the loop; safe from any thread, never blocks."""
        if self._closed:
            return
        self._calls.append(fn)
        if not self._pending:
            self._pending = True
            try:
                self._writer.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # a wake-up byte is already waiting, or we are closing

    @property
    def draining(self) -> bool:
        """Whether the loop is running queued calls right now."""
        return self._draining

    def has_calls(self) -> bool:
        """Whether calls are queued and not yet taken by a drain (any thread)."""
        return bool(self._calls)

    def idle(self) -> bool:
        """Whether nothing is queued and nothing queued is running now (safe
        from any thread): whatever was queued before this call has run."""
        # in this order: a call taken off the queue is running until drain ends
        return not self._calls and not self._draining

    def drain(self) -> None:
        """Run every queued call now, in order (in the loop thread).

        Re-entrant calls (a queued call that itself drains) return at once:
        the outer drain goes on with the rest, which keeps the order.
        """
        if self._draining:
            return
        self._draining = True
        try:
            self._pending = False
            calls = self._calls
            # a burst of submits leaves as one write, from here when it can
            with writes_deferred():
                while True:
                    while calls:
                        fn = calls.popleft()
                        try:
                            fn()
                        except Exception:
                            logger.exception("A queued client call failed")
                    if self._after_drain is not None:
                        self._after_drain()
                    if not calls:
                        break
        finally:
            self._draining = False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Wait for wake-ups and drain, until cancelled."""
        task_status.started()
        while True:
            await anyio.wait_readable(self._reader)
            try:
                self._reader.recv(4096)
            except BlockingIOError:
                pass
            self.drain()

    def close(self) -> None:
        """Run what is queued, then close the socket pair; later calls are dropped."""
        self.drain()
        self._closed = True
        self._reader.close()
        self._writer.close()
