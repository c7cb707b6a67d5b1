"""CoordinationState: variables, queues, semaphores (locks), events,
multi-locks and datasets, fed events and compared with the instructions a
user's calls should lead to."""

from __future__ import annotations

from trioclust.core.coordination import (
    NOT_HELD,
    TIMED_OUT,
    CancelWait,
    ClientGone,
    CoordinationState,
    DropKeys,
    EventClear,
    EventSet,
    EventWait,
    HoldKeys,
    Item,
    MultiLockAcquire,
    MultiLockRelease,
    PublishDataset,
    QueueGet,
    QueuePut,
    Reply,
    SemaphoreAcquire,
    SemaphoreCreate,
    SemaphoreRelease,
    UnpublishDataset,
    VariableDelete,
    VariableGet,
    VariableSet,
)

S = "s"


def ok(waiter: str, value: object = None) -> Reply:
    return Reply(waiter=waiter, value=value, stimulus_id=S)


def test_a_variable_get_waits_for_its_set_and_holds_a_stored_future() -> None:
    c = CoordinationState()
    assert c.handle(VariableGet(name="v", client="a", waiter="w1", stimulus_id=S)) == []
    future = Item(value=b"f", keys=("k",))
    assert c.handle(VariableSet(name="v", item=future, stimulus_id=S)) == [
        HoldKeys(keys=("k",), stimulus_id=S),
        ok("w1", future),
    ]
    assert c.handle(VariableGet(name="v", client="b", waiter="w2", stimulus_id=S)) == [ok("w2", future)]
    # a new value lets go of the old future
    plain = Item(value=b"1")
    assert c.handle(VariableSet(name="v", item=plain, stimulus_id=S)) == [DropKeys(keys=("k",), stimulus_id=S)]
    assert c.handle(VariableDelete(name="v", stimulus_id=S)) == []
    assert c.variables == {}


def test_a_get_given_up_answers_timed_out_once() -> None:
    c = CoordinationState()
    c.handle(VariableGet(name="v", client="a", waiter="w", stimulus_id=S))
    assert c.handle(CancelWait(waiter="w", stimulus_id=S)) == [
        Reply(waiter="w", status=TIMED_OUT, stimulus_id=S)
    ]
    assert c.handle(CancelWait(waiter="w", stimulus_id=S)) == []  # answered already
    assert c.handle(VariableSet(name="v", item=Item(value=b"x"), stimulus_id=S)) == []


def test_queue_first_in_first_out_batches_and_held_futures() -> None:
    c = CoordinationState()
    one, two = Item(value=b"1"), Item(value=b"2", keys=("k",))
    assert c.handle(QueuePut(name="q", item=one, stimulus_id=S)) == []
    assert c.handle(QueuePut(name="q", item=two, stimulus_id=S)) == [HoldKeys(keys=("k",), stimulus_id=S)]
    assert c.qsize("q") == 2
    assert c.handle(QueueGet(name="q", client="a", waiter="g1", stimulus_id=S)) == [ok("g1", [one])]
    # the getter is answered first (the runtime makes it want the key), then the hold goes
    assert c.handle(QueueGet(name="q", client="a", waiter="g2", batch=True, stimulus_id=S)) == [
        ok("g2", [two]),
        DropKeys(keys=("k",), stimulus_id=S),
    ]
    assert c.handle(QueueGet(name="q", client="a", waiter="g3", batch=True, stimulus_id=S)) == [ok("g3", [])]
    # a batch of n waits for n items
    assert c.handle(QueueGet(name="q", client="a", waiter="g4", batch=True, n=2, stimulus_id=S)) == []
    assert c.handle(QueuePut(name="q", item=one, stimulus_id=S)) == []
    assert c.handle(QueuePut(name="q", item=one, stimulus_id=S)) == [ok("g4", [one, one])]


def test_a_bounded_queue_makes_puts_wait_for_room() -> None:
    """Queue(maxsize=2): the third put waits until a get makes room; a put
    given up is never stored (its future's hold goes), and a get of n takes
    items as they come, more than maxsize in all."""
    c = CoordinationState()
    one, two, three = Item(value=b"1"), Item(value=b"2"), Item(value=b"3", keys=("k",))
    assert c.handle(QueuePut(name="q", item=one, waiter="p1", maxsize=2, stimulus_id=S)) == [ok("p1")]
    # later requests keep the first one's maxsize
    assert c.handle(QueuePut(name="q", item=two, waiter="p2", stimulus_id=S)) == [ok("p2")]
    assert c.handle(QueuePut(name="q", item=three, waiter="p3", client="a", stimulus_id=S)) == [
        HoldKeys(keys=("k",), stimulus_id=S)
    ]
    assert c.qsize("q") == 2
    assert c.handle(QueueGet(name="q", client="b", waiter="g1", stimulus_id=S)) == [
        ok("g1", [one]), ok("p3")
    ]
    assert [i.value for i in c.queues["q"].items] == [b"2", b"3"]
    # a put that times out while full is dropped, with its hold
    four = Item(value=b"4", keys=("k4",))
    assert c.handle(QueuePut(name="q", item=four, waiter="p4", stimulus_id=S)) == [
        HoldKeys(keys=("k4",), stimulus_id=S)
    ]
    assert c.handle(CancelWait(waiter="p4", stimulus_id=S)) == [
        DropKeys(keys=("k4",), stimulus_id=S), Reply(waiter="p4", status=TIMED_OUT, stimulus_id=S)
    ]
    assert c.qsize("q") == 2
    # a get of 3 from a queue of at most 2 takes what comes
    assert c.handle(QueueGet(name="q", client="b", waiter="g2", batch=True, n=3, stimulus_id=S)) == []
    assert c.qsize("q") == 0
    assert c.handle(QueuePut(name="q", item=one, waiter="p5", stimulus_id=S)) == [
        ok("p5"), ok("g2", [two, three, one]), DropKeys(keys=("k",), stimulus_id=S)
    ]


def test_a_get_of_n_given_up_puts_its_items_back() -> None:
    c = CoordinationState()
    one, two = Item(value=b"1"), Item(value=b"2")
    c.handle(QueuePut(name="q", item=one, maxsize=1, stimulus_id=S))
    c.handle(QueueGet(name="q", client="b", waiter="g", batch=True, n=3, stimulus_id=S))
    c.handle(QueuePut(name="q", item=two, stimulus_id=S))
    assert c.qsize("q") == 0
    assert c.handle(CancelWait(waiter="g", stimulus_id=S)) == [
        Reply(waiter="g", status=TIMED_OUT, stimulus_id=S)
    ]
    assert [i.value for i in c.queues["q"].items] == [b"1", b"2"]
    # a client that goes takes its waiting puts with it
    c.handle(QueuePut(name="q", item=one, waiter="p", client="gone", stimulus_id=S))
    c.handle(ClientGone(client="gone", stimulus_id=S))
    assert c.handle(QueueGet(name="q", client="b", waiter="g2", batch=True, stimulus_id=S)) == [
        ok("g2", [one, two])
    ]


def test_semaphore_leases_queue_and_go_with_their_client() -> None:
    c = CoordinationState()
    c.handle(SemaphoreCreate(name="db", max_leases=2, stimulus_id=S))
    assert c.handle(SemaphoreAcquire(name="db", lease="l1", client="a", waiter="w1", stimulus_id=S)) == [
        ok("w1", True)
    ]
    assert c.handle(SemaphoreAcquire(name="db", lease="l2", client="worker", waiter="w2", stimulus_id=S)) == [
        ok("w2", True)
    ]
    assert c.handle(SemaphoreAcquire(name="db", lease="l3", client="b", waiter="w3", stimulus_id=S)) == []
    assert c.semaphore_value("db") == 2
    # the worker holding l2 dies: its lease goes to the waiting one
    assert c.handle(ClientGone(client="worker", stimulus_id=S)) == [ok("w3", True)]
    assert c.handle(SemaphoreRelease(name="db", lease="l1", waiter="r1", stimulus_id=S)) == [ok("r1")]
    assert c.handle(SemaphoreRelease(name="db", lease="l1", waiter="r2", stimulus_id=S)) == [
        Reply(waiter="r2", status=NOT_HELD, stimulus_id=S)
    ]
    assert c.semaphore_value("db") == 1


def test_a_lock_is_a_semaphore_of_one_lease() -> None:
    c = CoordinationState()
    assert c.handle(SemaphoreAcquire(name="lock", lease="a", client="x", waiter="w1", stimulus_id=S)) == [
        ok("w1", True)
    ]
    assert c.handle(SemaphoreAcquire(name="lock", lease="b", client="y", waiter="w2", stimulus_id=S)) == []
    assert c.handle(CancelWait(waiter="w2", stimulus_id=S)) == [
        Reply(waiter="w2", status=TIMED_OUT, stimulus_id=S)
    ]
    assert c.handle(SemaphoreRelease(name="lock", lease="a", waiter="r", stimulus_id=S)) == [ok("r")]
    assert c.semaphore_value("lock") == 0


def test_events_wake_every_waiter_and_clear() -> None:
    c = CoordinationState()
    assert c.handle(EventWait(name="e", client="a", waiter="w1", stimulus_id=S)) == []
    assert c.handle(EventWait(name="e", client="b", waiter="w2", stimulus_id=S)) == []
    assert c.handle(EventSet(name="e", stimulus_id=S)) == [ok("w1", True), ok("w2", True)]
    assert c.is_set("e")
    assert c.handle(EventWait(name="e", client="a", waiter="w3", stimulus_id=S)) == [ok("w3", True)]
    c.handle(EventClear(name="e", stimulus_id=S))
    assert not c.is_set("e")
    assert c.handle(EventWait(name="e", client="a", waiter="w4", stimulus_id=S)) == []
    assert c.handle(ClientGone(client="a", stimulus_id=S)) == []
    assert c.handle(EventSet(name="e", stimulus_id=S)) == []  # w4 went with its client


def test_multilock_takes_all_or_waits() -> None:
    c = CoordinationState()
    assert c.handle(
        MultiLockAcquire(names=("a", "b"), num_locks=None, lease="l1", client="x", waiter="w1", stimulus_id=S)
    ) == [ok("w1", True)]
    assert c.handle(
        MultiLockAcquire(names=("b", "c"), num_locks=None, lease="l2", client="y", waiter="w2", stimulus_id=S)
    ) == []
    assert c.handle(
        MultiLockAcquire(names=("c", "d"), num_locks=1, lease="l3", client="y", waiter="w3", stimulus_id=S)
    ) == [ok("w3", True)]
    assert c.handle(MultiLockRelease(lease="l1", waiter="r1", stimulus_id=S)) == [ok("r1")]
    # b is free now, but c went to l3 (num_locks=1 took the first free one)
    assert c.handle(MultiLockRelease(lease="l3", waiter="r3", stimulus_id=S)) == [ok("r3"), ok("w2", True)]
    assert c.handle(MultiLockRelease(lease="l3", waiter="r4", stimulus_id=S)) == [
        Reply(waiter="r4", status=NOT_HELD, stimulus_id=S)
    ]
    assert c.handle(ClientGone(client="y", stimulus_id=S)) == []
    assert c.handle(
        MultiLockAcquire(names=("b", "c"), num_locks=None, lease="l5", client="z", waiter="w5", stimulus_id=S)
    ) == [ok("w5", True)]


def test_datasets_hold_their_futures_until_unpublished() -> None:
    c = CoordinationState()
    item = Item(value=b"f", keys=("k1", "k2"))
    assert c.handle(PublishDataset(items={"x": item}, override=False, waiter="p1", stimulus_id=S)) == [
        HoldKeys(keys=("k1", "k2"), stimulus_id=S),
        ok("p1"),
    ]
    assert c.handle(PublishDataset(items={"x": item}, override=False, waiter="p2", stimulus_id=S)) == [
        Reply(waiter="p2", value=["x"], status="exists", stimulus_id=S)
    ]
    assert c.handle(ClientGone(client="publisher", stimulus_id=S)) == []  # datasets outlive clients
    assert c.handle(UnpublishDataset(name="x", stimulus_id=S)) == [
        DropKeys(keys=("k1", "k2"), stimulus_id=S)
    ]
    assert c.datasets == {}
