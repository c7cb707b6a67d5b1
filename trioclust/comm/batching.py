"""The sending policy of a :class:`~trioclust.comm.Link`, without I/O: :class:`OutgoingBatches`.

Theory of operation
-------------------
A link writes *batches*: lists of op dicts, one wire message each. This
module decides what goes into each batch and when it is due; the link's
writer task does the waiting and the writing and reports back. It never
reads a clock: every decision that depends on time takes ``now``.

The object tracks the link's writer in one of three states:

* ``RUNNING``: the writer is writing, or was woken and will look at the
  queue before it waits again. A message added now leaves with its next
  batch; nobody needs to wake it.
* ``WAITING``: the writer waits for messages. :meth:`OutgoingBatches.add`
  says so (returns True): the link wakes it, or, inside a
  :func:`~trioclust.comm.writes_deferred` block, marks itself
  :attr:`~OutgoingBatches.deferred` and decides at the block's end
  (:meth:`~OutgoingBatches.end_deferred`): write the batch right there,
  or wake the writer.
* ``LINGERING``: the writer waits until :meth:`~OutgoingBatches.due` for
  company. Of the messages added, only an urgent one ends that wait early
  (so does the link's closing).

The rules:

* An idle link writes at once; what is added while a batch is written
  gathers into the next one.
* A message that is not urgent (more of its kind follow soon) waits up to
  ``linger`` after the previous write; a lazy one (nothing waits for it) up
  to ``lazy_linger`` after it was added, even on an idle link. An urgent
  one, or closing, ends either wait: the batch is due at once.
* Messages with a weight cut the batch they are taken in: a wire batch ends
  once its weights reach :data:`BATCH_WEIGHT` (:meth:`~OutgoingBatches.cuts`).
* ``on_written`` callbacks go with the batch taken (:meth:`~OutgoingBatches.take`)
  and are handed back, in the order they were added, once it is written
  (:meth:`~OutgoingBatches.written`), or, if the link ends first, by
  :meth:`~OutgoingBatches.discard`, which drops the queue.
* A batch written at the end of a ``writes_deferred`` block goes out whole
  and at once, so only an urgent batch without weights qualifies; if the
  comm keeps part of it (``held``), its callbacks wait for the writer to
  flush that part (:meth:`~OutgoingBatches.take_held_callbacks`).
* Another thread may write a batch of its own only while nothing is
  queued, nothing is being decided at a block's end, the writer waits for
  messages and the link is not closing (:meth:`~OutgoingBatches.thread_may_write`).

Everything here runs on the link's event loop thread except
:meth:`~OutgoingBatches.thread_may_write`, which only reads.
:meth:`~OutgoingBatches.add` runs for every message sent: a few attribute
updates, no object made per message (the queue, and the callbacks and
weights where given, only grow).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "BATCH_WEIGHT",
    "LINGERING",
    "NOTHING",
    "RUNNING",
    "WAITING",
    "WAKE",
    "WRITE",
    "OutgoingBatches",
]

#: The weight (see :meth:`OutgoingBatches.add`) at which a wire batch closes.
BATCH_WEIGHT: Final = 1000

#: The writer writes, or will look at the queue before it waits again.
RUNNING: Final = 0
#: The writer waits for messages.
WAITING: Final = 1
#: The writer waits until the queued batch is due.
LINGERING: Final = 2

#: What :meth:`OutgoingBatches.end_deferred` asks of the link.
NOTHING: Final = 0
WRITE: Final = 1
WAKE: Final = 2

Message = dict[str, Any]
Callback = Callable[[], object]


class OutgoingBatches:
    """The outgoing queue of one link and every decision about it.

    Args:
        linger: seconds a not-urgent message may wait after the previous
            write (``comm.linger``); 0 turns that off.
        lazy_linger: seconds a lazy message may wait after it was added
            (``comm.lazy-linger``).
    """

    __slots__ = (
        "_cut",
        "_in_flight",
        "_last_write",
        "_lazy_linger",
        "_lazy_until",
        "_linger",
        "_on_written",
        "_urgent",
        "_weights",
        "closing",
        "deferred",
        "queue",
        "writer",
        "writing",
    )

    def __init__(self, linger: float, lazy_linger: float) -> None:
        self._linger = linger
        self._lazy_linger = lazy_linger
        #: the messages to write next, in order
        self.queue: list[Message] = []
        self._on_written: list[Callback] = []  # for the queued messages
        self._weights: dict[int, int] = {}  # id of a queued heavy message -> its weight
        self._urgent = False  # an urgent message is queued
        self._lazy_until: float | None = None  # a lazy message waits until then
        self._last_write = -math.inf
        #: the writer's state: RUNNING, WAITING or LINGERING
        self.writer = RUNNING
        #: in the current writes_deferred() block's list of links
        self.deferred = False
        #: a batch is taken and not yet reported written
        self.writing = False
        self._in_flight: list[Callback] = []  # the callbacks of the batch being written
        self._cut: dict[int, int] | None = None  # the weights of the batch being written
        #: the link accepts no more messages and writes what is queued at once
        self.closing = False

    def __repr__(self) -> str:
        state = ("running", "waiting", "lingering")[self.writer]
        return f"<OutgoingBatches {len(self.queue)} queued, writer {state}>"

    # ------------------------------------------------------------ messages in
    def add(
        self,
        msg: Message,
        weight: int,
        urgent: bool,
        lazy: bool,
        on_written: Callback | None,
        now: float,
    ) -> bool:
        """Queue ``msg``; True if the writer must be woken for it.

        The writer must be woken when it waits for messages, or lingers and
        something urgent is now queued; not while the link is in a
        ``writes_deferred`` block's list already. Positional arguments: this
        runs for every message.

        Args:
            msg: the message.
            weight: how many ordinary messages it is worth (see :data:`BATCH_WEIGHT`).
            urgent: write it as soon as the link can; False lets it wait up
                to ``linger`` after the previous write.
            lazy: nothing waits for it: it may wait up to ``lazy_linger``
                from ``now``, even on an idle link; overrides ``urgent``.
            on_written: called once its batch is written, or the link ends.
            now: the current time; read only when ``lazy``.
        """
        self.queue.append(msg)
        if on_written is not None:
            self._on_written.append(on_written)
        if weight > 1:
            self._weights[id(msg)] = weight
        if lazy:
            if self._lazy_until is None:
                self._lazy_until = now + self._lazy_linger
        elif urgent:
            self._urgent = True
        writer = self.writer
        if writer == RUNNING or self.deferred:
            return False
        return writer == WAITING or self._urgent

    def close(self) -> None:
        """The link closes: accept no more messages, write the queue at once."""
        self.closing = True

    def discard(self) -> list[Callback]:
        """The link ended: drop the queue; returns its messages' callbacks to run."""
        self.closing = True
        self.queue.clear()
        self._weights.clear()
        self._urgent = False
        self._lazy_until = None
        callbacks, self._on_written = self._on_written, []
        return callbacks

    # ---------------------------------------------------------------- writer
    def writer_waits(self) -> None:
        """The writer waits for messages (the queue is empty)."""
        self.writer = WAITING

    def writer_lingers(self) -> None:
        """The writer waits until :meth:`due`, or until woken."""
        self.writer = LINGERING

    def writer_runs(self) -> None:
        """The writer was woken, or its linger ended."""
        self.writer = RUNNING

    def due(self, now: float) -> float:
        """When the queued batch is due: a time not after ``now`` means at once."""
        if self._urgent or self.closing:
            return now
        until = self._last_write + self._linger
        lazy_until = self._lazy_until
        if lazy_until is not None and lazy_until > until:
            return lazy_until
        return until

    def take(self, now: float) -> list[Message]:
        """Take the whole queue as the batch to write, at ``now``.

        Its callbacks are handed back by :meth:`written`; where heavy
        messages cut it into several wire batches, :meth:`cuts` says.
        """
        batch, self.queue = self.queue, []
        self._last_write = now
        self._urgent = False
        self._lazy_until = None
        self.writing = True
        if self._on_written:
            self._in_flight, self._on_written = self._on_written, []
        if self._weights:
            self._cut, self._weights = self._weights, {}
        return batch

    def cuts(self, batch: list[Message]) -> list[list[Message]] | None:
        """The wire batches that the taken ``batch`` travels in, in order: cut
        after each reaching :data:`BATCH_WEIGHT`; None if it travels whole."""
        weights, self._cut = self._cut, None
        if weights is None:
            return None
        parts: list[list[Message]] = []
        part: list[Message] = []
        weight = 0
        for msg in batch:
            part.append(msg)
            weight += weights.get(id(msg), 1)
            if weight >= BATCH_WEIGHT:
                parts.append(part)
                part = []
                weight = 0
        if part:
            parts.append(part)
        return parts

    def written(self) -> list[Callback]:
        """The taken batch is written (or never will be): its callbacks, to run."""
        self.writing = False
        self._cut = None
        callbacks = self._in_flight
        if callbacks:
            self._in_flight = []
        return callbacks

    # ------------------------------------------------- writes_deferred() blocks
    def end_deferred(self) -> int:
        """The ``writes_deferred`` block that holds the link ends: what to do.

        Returns:
            :data:`NOTHING` if the writer runs (it takes the queue) or
            nothing is queued; :data:`WRITE` if the queue is due and goes
            whole (urgent, no weights, not closing): try writing it without
            waiting, then report :meth:`sent_at_once`, or wake the writer
            if that failed; :data:`WAKE` otherwise.
        """
        self.deferred = False
        if self.writer == RUNNING or not self.queue:
            return NOTHING
        if self._urgent and not self._weights and not self.closing:
            return WRITE
        return WAKE

    def sent_at_once(self, now: float, held: bool) -> list[Callback] | None:
        """The queue was written at the end of a block, at ``now``.

        Args:
            now: the current time.
            held: the comm keeps part of it until the writer flushes it.

        Returns:
            The queued messages' callbacks to run now; None if ``held``:
            they stay for :meth:`take_held_callbacks`, and the link wakes
            its writer to flush.
        """
        self.queue = []
        self._urgent = False
        self._lazy_until = None
        self._last_write = now
        if held:
            return None
        callbacks = self._on_written
        if callbacks:
            self._on_written = []
        return callbacks

    def take_held_callbacks(self) -> list[Callback]:
        """The queue is empty and the comm holds part of a batch written at
        once: the callbacks that wait for its flush."""
        callbacks = self._on_written
        if callbacks:
            self._on_written = []
        return callbacks

    # ------------------------------------------------------------- threads
    def thread_may_write(self) -> bool:
        """Whether another thread may write a batch of its own now: nothing
        queued or about to be decided, the writer waiting for messages, the
        link open. Reads only; the comm keeps the write itself apart from
        the loop's."""
        return (
            not self.closing
            and not self.queue
            and not self.deferred
            and self.writer == WAITING
        )
