"""A :class:`Link`: one peer connection for one-way messages and requests, batched.

Theory of operation
-------------------
Every wire message on a link's comm is a *batch*: a list of op dicts
(``{"op": "task-finished", ...}``). :meth:`Link.send` only appends to an
outgoing list and, if the writer task is idle, wakes it. The writer takes the
whole list as one batch and writes it; whatever is sent while that write is in
flight accumulates and becomes the next batch. So an idle link sends at once
(no timer, no 10 ms floor) and a busy one coalesces many small messages into
few writes.

Refinements:

* Sends made inside a :func:`writes_deferred` block (every reader runs its
  handlers in one) do not wake an idle writer: at the end of the block each
  link they went to writes its batch right there, without a task switch,
  where the comm can write without waiting (:meth:`Comm.send_nowait`: TCP
  under trio), and wakes its writer otherwise. What a handler sends in reply
  to one received batch thus leaves in one write per link, at once.
* A message sent as not urgent (more of its kind will follow soon) may wait
  up to ``comm.linger`` after the link's previous write, so that a busy stream
  of them goes out in fewer, larger batches; a lazy one (nothing waits for
  it) may wait up to ``comm.lazy-linger`` from when it was sent, even on an
  idle link; an urgent one ends either wait.
* Heavy messages (a client's graph in chunks of 1,000 tasks, sent with a
  ``weight``) close a batch, so that each is encoded, sent and decoded on its
  own rather than all at once.
* ``on_written`` callbacks run once their message's batch is written (or the
  link ends).
* Everything above runs in the link's event loop thread. One way in from
  another thread: :meth:`Link.send_from_thread` writes a batch there and then,
  if the link is idle (nothing queued, the writer waiting) and the comm can
  write without waiting; the comm's write lock keeps it out of any write of
  the loop's. A synchronous client's user thread sends its submissions so.

Every one of these decisions (what the next batch holds, when it is due,
what runs after it is written, whether a thread may write) is made by the
link's :class:`~trioclust.comm.batching.OutgoingBatches`, which does no I/O
and reads no clock. The link does the rest: its writer task waits (for a
wake, or until the batch is due), writes the batch it takes, and reports it
written; :meth:`Link.send` queues and wakes; the end of a
``writes_deferred()`` block writes with :meth:`Comm.send_nowait`.

The reader task receives batches and dispatches each op inline:

* ``{"op": "reply", "id": n, ...}`` completes the pending :meth:`Link.request` ``n``;
* anything else calls ``handlers[op](msg)`` synchronously (no task per message:
  this is the hot path). A handler that returns an awaitable (an ``async def``
  handler) is awaited in a child task instead;
* if the message has an ``"id"``, the handler's return value is sent back as
  ``{"op": "reply", "id": n, "status": "OK", "result": value}``, or its
  exception as ``{"op": "reply", "id": n, "status": "error", "exception":
  <pickled exception>, "text": "TypeName: message", "traceback": "..."}``.

The link ends when its comm closes (either side), when the peer sends bytes
that are not the protocol (logged once), or on :meth:`Link.aclose`, which
first flushes what was already sent (bounded by ``runtime.close-timeout``).
:meth:`Link.run` then returns normally; pending requests raise
:class:`CommClosedError`; ``on_close(reason)`` is called once.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import threading
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.abc

from trioclust import config
from trioclust.comm.batching import WAKE, WRITE, OutgoingBatches
from trioclust.comm.comm import Comm
from trioclust.errors import CommClosedError, ProtocolError, RemoteError
from trioclust.protocol.codec import dumps
from trioclust.protocol.serialize import Serialized, serialize

__all__ = ["Handler", "Link", "LinkStatistics", "writes_deferred"]

logger = logging.getLogger("trioclust.comm")

#: A message handler: called with the op dict; may return a value or an awaitable.
Handler = Callable[[Any], object]  # takes a declared message (protocol/messages.py)


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """Counters of a :class:`Link`, from :meth:`Link.statistics`."""

    messages_sent: int
    batches_sent: int
    messages_received: int
    batches_received: int
    pending_requests: int
    queued: int


class _WritesDeferred(threading.local):
    """The context manager :func:`writes_deferred` returns: one per thread
    (each event loop has its own links), a class rather than a generator
    because every received batch enters it."""

    depth = 0
    links: list[Link] | None = None

    def __enter__(self) -> None:
        self.depth += 1
        if self.links is None:
            self.links = []

    def __exit__(self, *exc_info: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            links, self.links = self.links, None
            for link in links or ():
                link._write_deferred()


_deferred = _WritesDeferred()


def writes_deferred() -> contextlib.AbstractContextManager[None]:
    """Send what the block sends to idle links in one write per link, at its end.

    Inside the block, :meth:`Link.send` to a link whose writer is idle does
    not wake the writer; at the end, each such link writes its batch from
    here, without a task switch, where its comm can (:meth:`Comm.send_nowait`),
    and wakes its writer otherwise. Each link's reader runs its handlers in
    such a block; use it around other synchronous code that reacts to one
    event with several sends (a worker handing back finished tasks). Nests:
    the outermost block writes.
    """
    return _deferred


class _Pending:
    __slots__ = ("error", "event", "reply")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.reply: dict[str, Any] | None = None
        self.error: Exception | None = None  # the request itself could not be encoded


class _ReplyCallback:
    """A request answered by a callback, run in the loop where the reply is
    read, instead of by a waiting task (:meth:`Link.expect_reply`)."""

    __slots__ = ("_link", "_on_reply", "_rid", "error", "event", "reply")

    def __init__(self, link: Link, rid: int, on_reply: Callable[[Callable[[], Any]], object]) -> None:
        self.event = self  # set() below is called where a waiting request's event is
        self.reply: dict[str, Any] | None = None
        self.error: Exception | None = None
        self._link, self._rid, self._on_reply = link, rid, on_reply

    def set(self) -> None:
        self._link._pending.pop(self._rid, None)
        self._on_reply(partial(self._link._result_of, self))  # type: ignore[arg-type]


def error_reply(rid: Any, exc: BaseException) -> dict[str, Any]:
    """The reply carrying ``exc`` to the request ``rid`` (what a failing handler sends)."""
    return _error_reply(rid, exc)


def _error_reply(rid: Any, exc: BaseException) -> dict[str, Any]:
    text = f"{type(exc).__name__}: {exc}"
    try:
        pickled = serialize(exc.with_traceback(None))
    except Exception:
        pickled = serialize(RuntimeError(f"{text} (the exception could not be pickled)"))
    return {
        "op": "reply",
        "id": rid,
        "status": "error",
        "exception": pickled,
        "text": text,
        "traceback": "".join(traceback.format_exception(exc)),
    }


class Link:
    """Batched messaging and request/reply over one :class:`Comm`.

    Args:
        comm: a handshaken comm; the link owns it and closes it.
        handlers: op name to handler; looked up per message, so the mapping
            may gain entries later. ``"reply"`` is reserved.
        name: for log messages (default: the peer's address).
        on_close: called once, with the reason, when the link ends.
        on_batch: called after the handlers of each received batch have run,
            inside the same :func:`writes_deferred` block: a side whose
            handlers only gather one-way messages (a scheduler's task
            reports) acts on the whole batch's worth here, at once.
    """

    def __init__(
        self,
        comm: Comm,
        handlers: Mapping[str, Handler],
        *,
        name: str = "",
        on_close: Callable[[str], object] | None = None,
        on_batch: Callable[[], object] | None = None,
    ) -> None:
        self.comm = comm
        self.handlers = handlers
        self.name = name or f"link to {comm.peer_address}"
        self._on_close = on_close
        self._on_batch = on_batch
        # the outgoing queue and every decision about it
        self._batches = OutgoingBatches(
            config.get_float("comm.linger"), config.get_float("comm.lazy-linger")
        )
        # set to wake the writer from its wait for messages, or end its linger
        self._wake: anyio.Event | None = None
        self._drained: anyio.Event | None = None  # set by the writer when the queue empties
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._started = False
        self._closed = False
        self._close_reason = ""
        self._sent = [0, 0]  # messages, batches
        self._thread_sent = [0, 0]  # the same, written by send_from_thread
        self._thread_sent_lock = threading.Lock()
        self._received = [0, 0]

    def __repr__(self) -> str:
        state = f"closed: {self._close_reason}" if self._closed else "open"
        return f"<Link {self.name} ({state})>"

    @property
    def closed(self) -> bool:
        """Whether the link has ended or is closing (sends would fail)."""
        return self._batches.closing

    @property
    def close_reason(self) -> str:
        """Why the link ended; empty while it runs."""
        return self._close_reason

    def statistics(self) -> LinkStatistics:
        """Message and batch counters, for tests and dashboards."""
        return LinkStatistics(
            messages_sent=self._sent[0] + self._thread_sent[0],
            batches_sent=self._sent[1] + self._thread_sent[1],
            messages_received=self._received[0],
            batches_received=self._received[1],
            pending_requests=len(self._pending),
            queued=len(self._batches.queue),
        )

    # ---------------------------------------------------------------- sending
    def send(
        self,
        msg: Any,
        *,
        weight: int = 1,
        urgent: bool = True,
        lazy: bool = False,
        on_written: Callable[[], object] | None = None,
    ) -> None:
        """Queue a one-way message; it leaves with the next batch.

        Not thread-safe: call it from the event loop that runs the link.

        Args:
            msg: the message.
            weight: how many ordinary messages this one is worth (an
                update-graph: its number of tasks). A wire batch closes once
                it holds :data:`~trioclust.comm.batching.BATCH_WEIGHT`, so
                that heavy messages queued together still travel, and are
                decoded, a part at a time.
            urgent: False for a message that more of its kind will soon
                follow (a task finished while others run): a link that wrote
                less than ``comm.linger`` ago then waits out the rest before
                writing it, gathering more into the batch. An urgent message
                (the default) is written as soon as the link can.
            lazy: nothing waits for this message (a client's releases, a
                scheduler's order to drop data): it waits up to
                ``comm.lazy-linger`` from now for company, even on an idle
                link, unless something urgent comes first. Implies not urgent.
            on_written: called (in the event loop, without arguments) once
                the batch holding ``msg`` is in the kernel's hands, or when
                the link ends before that: what must not happen before the
                peer can know of ``msg`` (a worker starts a task's code only
                after telling the scheduler that it starts it).

        Raises:
            CommClosedError: the link has ended or is closing.
        """
        batches = self._batches
        if batches.closing:
            raise self._closed_error()
        if batches.add(
            msg, weight, urgent, lazy, on_written, anyio.current_time() if lazy else 0.0
        ):
            deferred = _deferred.links
            if deferred is None:
                self._wake_writer()
            else:  # the block's end writes, or wakes the writer
                batches.deferred = True
                deferred.append(self)

    def send_from_thread(self, batch: list[dict[str, Any]]) -> bool:
        """Write ``batch`` now, from a thread other than the event loop's, if
        the link is idle: True if it was written (or held by the comm, see
        below); False if nothing was done, and the caller sends the usual way.

        Idle means nothing queued, the writer waiting for messages and the
        comm able to write without waiting (:meth:`Comm.send_nowait`: TCP
        under trio); whatever the loop sends at the same moment is written
        before or after it, never into it. A part the kernel did not take at
        once is held by the comm (``comm.unsent``): the caller then has the
        loop call :meth:`wake` so that the writer sends it. No ``on_written``
        callbacks, no linger: the batch is urgent.
        """
        if not self._batches.thread_may_write():
            return False
        try:
            written = self.comm.send_nowait(batch)
        except Exception:
            return False  # not encodable: the usual way reports it
        if written:
            with self._thread_sent_lock:
                self._thread_sent[0] += len(batch)
                self._thread_sent[1] += 1
        return written

    def wake(self) -> None:
        """Have the writer look for work (after :meth:`send_from_thread` left
        bytes held). Not thread-safe: call it from the event loop."""
        self._wake_writer()

    def _wake_writer(self) -> None:
        """End the writer's wait for messages, or its linger."""
        wake = self._wake
        if wake is not None:
            self._wake = None
            self._batches.writer_runs()
            wake.set()

    def _write_deferred(self) -> None:
        """The end of a :func:`writes_deferred` block: write now, or wake the writer."""
        batches = self._batches
        action = batches.end_deferred()
        if action == WRITE:
            batch = batches.queue
            try:
                written = self.comm.send_nowait(batch)
            except Exception:
                written = False  # the writer salvages what it can encode
            if written:
                self._sent[0] += len(batch)
                self._sent[1] += 1
                callbacks = batches.sent_at_once(anyio.current_time(), self.comm.unsent)
                if callbacks is not None:
                    if callbacks:
                        self._run_on_written(callbacks)
                    return  # a lingering writer finds nothing left when its linger ends
                # the writer writes what the comm holds, then runs the callbacks
            self._wake_writer()
        elif action == WAKE:
            self._wake_writer()

    async def request(self, op: str, **kwargs: Any) -> Any:
        """Send ``{"op": op, **kwargs}`` with a fresh id and wait for the reply.

        Returns:
            The peer handler's return value.

        Raises:
            RemoteError: the peer's handler raised (``.exception`` is the
                pickled original, ``.text`` its ``"TypeName: message"``).
            CommClosedError: the link ended before the reply came.
        """
        return await self.request_soon(op, **kwargs)

    def request_soon(self, op: str, **kwargs: Any) -> Awaitable[Any]:
        """Send the request now, in order with this link's other sends, and
        return an awaitable of its reply (what :meth:`request` returns)."""
        rid = next(self._ids)
        pending = self._pending[rid] = _Pending()
        try:
            self.send({"op": op, **kwargs, "id": rid})
        except BaseException:
            self._pending.pop(rid, None)
            raise
        return self._reply_to(rid, pending)

    def expect_reply(self, on_reply: Callable[[Callable[[], Any]], object]) -> int:
        """An id for a request sent as a plain message (any thread may call
        this, then send it, also with :meth:`send_from_thread`): its reply,
        a ``reply`` message with this ``id``, calls ``on_reply`` in the loop
        with a function that returns the result or raises (as
        :meth:`request`), also when the link ends first."""
        rid = next(self._ids)
        self._pending[rid] = _ReplyCallback(self, rid, on_reply)  # type: ignore[assignment]
        if self._closed:  # ended meanwhile: _finish may have missed it
            self._pending.pop(rid, None)
            on_reply(self._closed_result)
        return rid

    def _closed_result(self) -> Any:
        raise self._closed_error()

    async def _reply_to(self, rid: int, pending: _Pending) -> Any:
        try:
            await pending.event.wait()
        finally:
            self._pending.pop(rid, None)
        return self._result_of(pending)

    def _result_of(self, pending: _Pending) -> Any:
        reply = pending.reply
        if reply is None:
            if pending.error is not None:
                raise pending.error
            raise self._closed_error()
        if reply.get("status") == "OK":
            return reply.get("result")
        exception = reply.get("exception")
        raise RemoteError(
            str(reply.get("text") or "remote error"),
            exception if isinstance(exception, Serialized) else None,
            reply.get("traceback") if isinstance(reply.get("traceback"), str) else None,
        )

    def _closed_error(self) -> CommClosedError:
        reason = self._close_reason or "this side closed the link"
        return CommClosedError(f"Connection to {self.comm.peer_address} closed: {reason}")

    # ---------------------------------------------------------------- running
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Read and write until the link ends; returns normally when it does.

        Start it with ``await task_group.start(link.run)``; messages sent
        before that are queued and go out first.
        """
        if self._started:
            raise RuntimeError(f"{self!r} is already running (run() is called once)")
        self._started = True
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._writer)
                task_status.started()
                await self._reader()
                tg.cancel_scope.cancel()
        finally:
            self._finish(self.comm.close_reason or "this side closed the link")
            await self.comm.aclose()

    async def aclose(self) -> None:
        """Flush queued messages (bounded by ``runtime.close-timeout``), then close."""
        if self._closed:
            return
        batches = self._batches
        batches.close()
        if self._started and (batches.queue or batches.writing or self.comm.unsent):
            if self._drained is None:  # a concurrent aclose() may be waiting already
                self._drained = anyio.Event()
            drained = self._drained
            self._wake_writer()  # flush now, not after a linger
            with anyio.move_on_after(config.get_float("runtime.close-timeout"), shield=True):
                await drained.wait()
        self._finish("this side closed the link")
        await self.comm.aclose()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def _finish(self, reason: str) -> None:
        """Mark the link ended: fail pending requests, call on_close once."""
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        callbacks = self._batches.discard()
        if callbacks:
            self._run_on_written(callbacks)
        for pending in list(self._pending.values()):
            pending.event.set()  # reply stays None: the request raises CommClosedError
        if self._drained is not None:
            self._drained.set()
        if self._on_close is not None:
            try:
                self._on_close(reason)
            except Exception:
                logger.exception("%s: on_close callback failed", self.name)

    async def _writer(self) -> None:
        batches = self._batches
        comm = self.comm
        while True:
            if comm.unsent and not batches.queue:
                # held by a direct write; its messages' callbacks wait for it
                held = batches.take_held_callbacks()
                try:
                    await comm.flush()
                except CommClosedError:
                    return self._end_writer()
                finally:
                    if held:
                        self._run_on_written(held)
            # a direct write may leave something held: flushed at the top
            while not batches.queue and not comm.unsent:
                if self._drained is not None:
                    self._drained.set()
                    self._drained = None
                wake = self._wake = anyio.Event()
                batches.writer_waits()
                await wake.wait()
            if not batches.queue:
                continue
            now = anyio.current_time()
            due = batches.due(now)
            if due > now:  # let the batch gather, unless something urgent comes
                wake = self._wake = anyio.Event()
                batches.writer_lingers()
                with anyio.move_on_after(due - now):
                    await wake.wait()
                self._wake = None
                batches.writer_runs()
                if not batches.queue:
                    continue  # written meanwhile, from a writes_deferred() block
                now = anyio.current_time()
            batch = batches.take(now)
            try:
                parts = batches.cuts(batch)
                if parts is None:
                    if not await self._write(batch):
                        return self._end_writer()
                else:
                    for part in parts:
                        if not await self._write(part):
                            return self._end_writer()
            finally:
                callbacks = batches.written()
                if callbacks:
                    self._run_on_written(callbacks)
            del batch  # not kept alive while the link is idle

    def _run_on_written(self, callbacks: list[Callable[[], object]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("%s: an on_written callback failed", self.name)

    async def _write(self, batch: list[dict[str, Any]]) -> bool:
        """Send one wire batch; False once the link cannot send any more."""
        comm = self.comm
        try:
            try:
                await comm.send(batch)
            except CommClosedError:
                return False
            except Exception:  # an unencodable message: send the rest without it
                batch = self._salvage(batch)
                await comm.send(batch)
        except CommClosedError:
            return False
        except Exception:
            logger.exception("%s: cannot send a batch; closing the link", self.name)
            await comm.aclose()
            return False
        self._sent[0] += len(batch)
        self._sent[1] += 1
        return True

    def _end_writer(self) -> None:
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def _salvage(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for msg in batch:
            try:
                dumps(msg)
            except Exception as exc:
                if msg.get("op") == "reply":
                    msg = _error_reply(msg.get("id"), exc)
                else:
                    pending = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
                    if pending is not None:  # our own request: raise there
                        pending.error = exc
                        pending.event.set()
                    else:
                        logger.error(
                            "%s: dropped a %r message that cannot be encoded: %r",
                            self.name,
                            msg.get("op"),
                            exc,
                        )
                    continue
            kept.append(msg)
        return kept

    # ---------------------------------------------------------------- reading
    async def _reader(self) -> None:
        comm = self.comm
        while True:
            try:
                batch = await comm.recv()
            except CommClosedError as exc:
                if not comm.closed_cleanly:  # cut mid-message, reset, ...: worth a line
                    logger.warning("%s: %s", self.name, exc)
                return
            except ProtocolError as exc:
                logger.error("%s: closing the connection: %s", self.name, exc)
                return
            if type(batch) is not list:
                logger.error(
                    "%s: closing the connection: %s sent a %s, not a batch (list) of messages",
                    self.name,
                    comm.peer_address,
                    type(batch).__name__,
                )
                await comm.aclose()
                return
            self._received[0] += len(batch)
            self._received[1] += 1
            with writes_deferred():
                self._dispatch_all(batch)
                if self._on_batch is not None:
                    try:
                        self._on_batch()
                    except Exception:
                        logger.exception("%s: on_batch callback failed", self.name)
            # not kept alive while waiting for the next one (a graph of
            # 100,000 tasks is a large batch)
            del batch

    def _dispatch_all(self, batch: list[Any]) -> None:
        for msg in batch:
            self._dispatch(msg)

    def _dispatch(self, msg: Any) -> None:
        if type(msg) is not dict:
            logger.warning(
                "%s: ignored a %s from %s; messages are dicts",
                self.name,
                type(msg).__name__,
                self.comm.peer_address,
            )
            return
        op = msg.get("op")
        if op == "reply":
            rid = msg.get("id")
            pending = self._pending.get(rid) if type(rid) is int else None
            if pending is not None:
                pending.reply = msg
                pending.event.set()
            return
        rid = msg.get("id")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            logger.warning(
                "%s: unknown operation %r from %s", self.name, op, self.comm.peer_address
            )
            if rid is not None:
                self._reply(
                    _error_reply(
                        rid,
                        ValueError(
                            f"unknown operation {op!r}; {self.name} handles {sorted(self.handlers)}"
                        ),
                    )
                )
            return
        try:
            result = handler(msg)
        except Exception as exc:
            self._handler_failed(op, rid, exc)
            return
        if result is not None and inspect.isawaitable(result):
            assert self._task_group is not None
            self._task_group.start_soon(self._await_handler, op, rid, result)
        elif rid is not None:
            self._reply({"op": "reply", "id": rid, "status": "OK", "result": result})

    async def _await_handler(self, op: Any, rid: Any, awaitable: Awaitable[Any]) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            self._handler_failed(op, rid, exc)
            return
        if rid is not None:
            self._reply({"op": "reply", "id": rid, "status": "OK", "result": result})

    def _handler_failed(self, op: Any, rid: Any, exc: Exception) -> None:
        if rid is not None:
            self._reply(_error_reply(rid, exc))
        else:
            logger.error("%s: handler for %r failed", self.name, op, exc_info=exc)

    def _reply(self, msg: dict[str, Any]) -> None:
        if not self._batches.closing:
            self.send(msg)
