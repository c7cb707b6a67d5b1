"""OutgoingBatches: a link's sending policy, driven by hand (no event loop, no clock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from trioclust.comm.batching import (
    BATCH_WEIGHT,
    LINGERING,
    NOTHING,
    RUNNING,
    WAITING,
    WAKE,
    WRITE,
    OutgoingBatches,
)

LINGER = 0.001
LAZY_LINGER = 0.01


def msg(i: int) -> dict[str, Any]:
    return {"op": "m", "i": i}


def add(
    batches: OutgoingBatches,
    m: dict[str, Any],
    *,
    weight: int = 1,
    urgent: bool = True,
    lazy: bool = False,
    on_written: Callable[[], object] | None = None,
    now: float = 0.0,
) -> bool:
    """``batches.add`` with :meth:`Link.send`'s defaults."""
    return batches.add(m, weight, urgent, lazy, on_written, now)


def idle() -> OutgoingBatches:
    """A link's batches whose writer has started and waits for messages."""
    batches = OutgoingBatches(LINGER, LAZY_LINGER)
    batches.writer_waits()
    return batches


def write(batches: OutgoingBatches, now: float) -> list[dict[str, Any]]:
    """What the writer does once due: take the batch and report it written."""
    batch = batches.take(now)
    assert batches.cuts(batch) is None
    batches.written()
    return batch


def test_an_idle_link_writes_at_once() -> None:
    batches = idle()
    assert add(batches, msg(0)), "the waiting writer is woken"
    batches.writer_runs()
    assert batches.due(100.0) <= 100.0
    assert write(batches, 100.0) == [msg(0)]
    batches.writer_waits()
    # not urgent, but the last write is long past: at once as well
    assert add(batches, msg(1), urgent=False)
    batches.writer_runs()
    assert batches.due(200.0) <= 200.0


def test_messages_sent_during_a_write_coalesce_into_the_next_batch() -> None:
    batches = idle()
    add(batches, msg(0))
    batches.writer_runs()
    batch = batches.take(1.0)
    assert batches.writing
    for i in range(1, 4):
        assert not add(batches, msg(i)), "a running writer needs no wake"
    assert batch == [msg(0)]
    batches.written()
    assert not batches.writing
    assert batches.due(1.0001) <= 1.0001
    assert write(batches, 1.0001) == [msg(1), msg(2), msg(3)]
    assert batches.queue == []


def test_messages_not_urgent_wait_up_to_linger_after_the_previous_write() -> None:
    batches = idle()
    add(batches, msg(0))
    batches.writer_runs()
    write(batches, 10.0)
    batches.writer_waits()
    assert add(batches, msg(1), urgent=False)
    batches.writer_runs()
    assert batches.due(10.0002) == pytest.approx(10.0 + LINGER)
    batches.writer_lingers()
    assert batches.writer == LINGERING
    assert not add(batches, msg(2), urgent=False), "does not end the linger"
    batches.writer_runs()  # the linger ran out
    assert write(batches, 10.0 + LINGER) == [msg(1), msg(2)]


def test_a_lazy_message_waits_up_to_lazy_linger_from_its_send_even_on_an_idle_link() -> None:
    batches = idle()
    assert add(batches, msg(0), lazy=True, now=5.0)  # woken, to linger
    batches.writer_runs()
    assert batches.due(5.0) == pytest.approx(5.0 + LAZY_LINGER)
    batches.writer_lingers()
    # a later lazy message does not push the first one's deadline back
    assert not add(batches, msg(1), lazy=True, now=5.005)
    assert batches.due(5.005) == pytest.approx(5.0 + LAZY_LINGER)
    batches.writer_runs()
    assert write(batches, 5.0 + LAZY_LINGER) == [msg(0), msg(1)]
    # written: the next lazy message counts from its own send
    batches.writer_waits()
    add(batches, msg(2), lazy=True, now=7.0)
    assert batches.due(7.0) == pytest.approx(7.0 + LAZY_LINGER)


def test_a_lazy_message_waits_for_the_later_of_its_deadline_and_the_linger() -> None:
    batches = OutgoingBatches(linger=1.0, lazy_linger=0.5)
    batches.writer_waits()
    add(batches, msg(0))
    batches.writer_runs()
    write(batches, 10.0)
    add(batches, msg(1), lazy=True, now=10.1)
    assert batches.due(10.1) == pytest.approx(11.0), "the linger after the write is later"


@pytest.mark.parametrize("lazy", [False, True])
def test_an_urgent_message_ends_either_wait(lazy: bool) -> None:
    batches = idle()
    add(batches, msg(0))
    batches.writer_runs()
    write(batches, 10.0)
    batches.writer_waits()
    add(batches, msg(1), urgent=False, lazy=lazy, now=10.0001)
    batches.writer_runs()
    assert batches.due(10.0001) > 10.0001
    batches.writer_lingers()
    assert add(batches, msg(2)), "the lingering writer is woken"
    batches.writer_runs()
    assert batches.due(10.0002) <= 10.0002
    assert write(batches, 10.0002) == [msg(1), msg(2)]


def test_closing_ends_a_linger_and_discard_hands_back_the_callbacks() -> None:
    called: list[str] = []
    batches = idle()
    add(batches, msg(0))
    batches.writer_runs()
    write(batches, 10.0)
    add(batches, msg(1), urgent=False, on_written=lambda: called.append("queued"))
    assert batches.due(10.0) > 10.0
    batches.close()
    assert batches.closing
    assert batches.due(10.0) <= 10.0, "what was sent before the close is flushed at once"
    for callback in batches.discard():  # the link ended before writing it
        callback()
    assert called == ["queued"]
    assert batches.queue == []
    assert batches.discard() == [], "each callback is handed back once"


def test_callbacks_of_a_batch_in_flight_are_handed_back_when_it_is_written() -> None:
    called: list[str] = []
    batches = idle()
    add(batches, msg(0), on_written=lambda: called.append("in flight"))
    batches.writer_runs()
    batches.take(1.0)
    add(batches, msg(1), on_written=lambda: called.append("queued"))
    for callback in batches.discard():  # the link ends during the write
        callback()
    for callback in batches.written():  # the writer's write ends (cancelled)
        callback()
    assert called == ["queued", "in flight"]


def test_weighted_messages_close_a_batch() -> None:
    batches = idle()
    add(batches, msg(0))
    for i in range(1, 4):
        add(batches, msg(i), weight=600)
    add(batches, msg(4))
    batches.writer_runs()
    batch = batches.take(1.0)
    parts = batches.cuts(batch)
    # 1 + 600 + 600 reaches BATCH_WEIGHT: the rest is a batch of its own
    assert parts == [[msg(0), msg(1), msg(2)], [msg(3), msg(4)]]
    batches.written()
    # the weights went with that batch: the next one travels whole
    add(batches, msg(5))
    assert batches.cuts(batches.take(2.0)) is None


def test_a_message_of_the_full_weight_is_a_batch_of_its_own() -> None:
    batches = idle()
    add(batches, msg(0))
    add(batches, msg(1), weight=BATCH_WEIGHT)
    add(batches, msg(2), weight=BATCH_WEIGHT)
    add(batches, msg(3))
    batches.writer_runs()
    batch = batches.take(1.0)
    assert batches.cuts(batch) == [[msg(0), msg(1)], [msg(2)], [msg(3)]]


def test_on_written_callbacks_follow_their_batch_in_order() -> None:
    called: list[int] = []
    batches = idle()
    for i in range(3):
        add(batches, msg(i), on_written=lambda i=i: called.append(i))
    add(batches, msg(3))  # no callback
    batches.writer_runs()
    batches.take(1.0)
    for i in range(4, 6):  # during the write: they belong to the next batch
        add(batches, msg(i), on_written=lambda i=i: called.append(i))
    for callback in batches.written():
        callback()
    assert called == [0, 1, 2]
    batches.take(2.0)
    for callback in batches.written():
        callback()
    assert called == [0, 1, 2, 4, 5]
    assert batches.written() == []


def test_a_deferred_block_wakes_no_one_and_its_end_writes_an_urgent_batch() -> None:
    called: list[int] = []
    batches = idle()
    assert add(batches, msg(0), on_written=lambda: called.append(0))
    batches.deferred = True  # the link joined the block's list instead of waking
    assert not add(batches, msg(1), on_written=lambda: called.append(1))
    assert not batches.thread_may_write()
    assert batches.end_deferred() == WRITE
    assert not batches.deferred
    callbacks = batches.sent_at_once(3.0, held=False)
    assert callbacks is not None
    for callback in callbacks:
        callback()
    assert called == [0, 1]
    assert batches.queue == []
    assert batches.writer == WAITING, "the writer never woke"
    # that write counts as the previous write for the linger
    add(batches, msg(2), urgent=False)
    assert batches.due(3.0) == pytest.approx(3.0 + LINGER)


@pytest.mark.parametrize(
    ("urgent", "weight", "closing"),
    [(False, 1, False), (True, 600, False), (True, 1, True)],
    ids=["not-urgent", "weighted", "closing"],
)
def test_a_deferred_block_wakes_the_writer_for_a_batch_it_must_not_write(
    urgent: bool, weight: int, closing: bool
) -> None:
    batches = idle()
    add(batches, msg(0), urgent=urgent, weight=weight)
    batches.deferred = True
    if closing:
        batches.close()
    assert batches.end_deferred() == WAKE


def test_a_deferred_block_leaves_a_running_writer_alone() -> None:
    batches = idle()
    add(batches, msg(0))
    batches.deferred = True
    batches.writer_runs()  # woken meanwhile (by aclose, say)
    assert batches.end_deferred() == NOTHING
    assert batches.queue == [msg(0)], "the writer takes it"
    empty = idle()
    empty.deferred = True
    assert empty.end_deferred() == NOTHING


def test_callbacks_of_a_batch_the_comm_holds_wait_for_its_flush() -> None:
    called: list[str] = []
    batches = idle()
    add(batches, msg(0), on_written=lambda: called.append("held"))
    batches.deferred = True
    assert batches.end_deferred() == WRITE
    assert batches.sent_at_once(1.0, held=True) is None
    assert batches.queue == []
    for callback in batches.take_held_callbacks():  # the writer flushed the rest
        callback()
    assert called == ["held"]
    assert batches.take_held_callbacks() == []


def test_a_thread_may_write_only_while_the_writer_waits_on_an_empty_queue() -> None:
    batches = OutgoingBatches(LINGER, LAZY_LINGER)
    assert batches.writer == RUNNING
    assert not batches.thread_may_write(), "the writer has not started waiting"
    batches.writer_waits()
    assert batches.thread_may_write()
    add(batches, msg(0), lazy=True, now=1.0)
    assert not batches.thread_may_write(), "it would pass what is queued"
    batches.writer_runs()
    batches.writer_lingers()
    assert not batches.thread_may_write()
    batches.writer_runs()
    write(batches, 2.0)
    assert not batches.thread_may_write(), "the writer has not come back to wait"
    batches.writer_waits()
    assert batches.thread_may_write()
    batches.deferred = True
    assert not batches.thread_may_write(), "a block's end is about to write"
    batches.deferred = False
    batches.close()
    assert not batches.thread_may_write()
