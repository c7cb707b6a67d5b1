"""client.replicate and client.rebalance, planned in the core without an event loop
(Dask's Client.replicate docstring examples: to all workers, to n, to named
workers, n=1 reduces replicas)."""

from __future__ import annotations

from core_checks import check_scheduler

from trioclust.core.events import (
    AddClient,
    AddReplicas,
    AddWorker,
    NewTask,
    Rebalance,
    ReplicasFailed,
    Replicate,
    SchedulerEvent,
    TaskFinished,
    UpdateGraph,
)
from trioclust.core.instructions import AcquireReplicas, FreeKeys, SchedulerInstruction
from trioclust.core.scheduler_state import SchedulerState


class Harness:
    def __init__(self, *workers: str) -> None:
        self.s = SchedulerState()
        self(AddClient(client="c", stimulus_id="hello"))
        for w in workers:
            self(AddWorker(address=w, nthreads=1, stimulus_id=f"add-{w}"))

    def __call__(self, *events: SchedulerEvent) -> list[SchedulerInstruction]:
        out = self.s.handle(*events)
        check_scheduler(self.s)
        return out

    def compute(self, key: str, nbytes: int = 10) -> str:
        """``key`` computed; returns the worker holding it."""
        self(UpdateGraph(client="c", tasks=(NewTask(key=key, run_spec="r"),), wanted=(key,), stimulus_id="g"))
        ts = self.s.tasks[key]
        assert ts.processing_on is not None
        worker = ts.processing_on.address
        self(TaskFinished(worker=worker, key=key, nbytes=nbytes, type_name="int", stimulus_id="f"))
        return worker

    def holders(self, key: str) -> set[str]:
        return set(self.s.tasks[key].who_has)


def copies(out: list[SchedulerInstruction]) -> dict[str, dict[str, tuple[str, ...]]]:
    return {i.worker: dict(i.who_has) for i in out if isinstance(i, AcquireReplicas)}


def test_replicate_to_all_workers_then_reduce_to_one() -> None:
    """c.replicate([x]) sends to all workers; c.replicate([x], n=1) reduces replications."""
    h = Harness("w1", "w2", "w3")
    holder = h.compute("x")
    out = h(Replicate(keys=("x",), stimulus_id="rep"))
    others = sorted({"w1", "w2", "w3"} - {holder})
    assert copies(out) == {w: {"x": (holder,)} for w in others}
    for w in others:
        assert h(AddReplicas(worker=w, keys=("x",), stimulus_id="rep")) == []
    assert h.holders("x") == {"w1", "w2", "w3"}
    out = h(Replicate(keys=("x",), n=1, stimulus_id="less"))
    assert sorted(i.worker for i in out if isinstance(i, FreeKeys)) == ["w1", "w2"]
    assert all(i.keys == ("x",) for i in out if isinstance(i, FreeKeys))
    assert h.holders("x") == {"w3"}


def test_replicate_to_n_and_to_named_workers() -> None:
    """c.replicate([x], n=3); c.replicate([x], workers=[...]); n=1 among named workers."""
    h = Harness("w1", "w2", "w3", "w4")
    holder = h.compute("x")
    out = h(Replicate(keys=("x",), n=3, stimulus_id="n3"))
    assert len(copies(out)) == 2
    assert all(v == {"x": (holder,)} for v in copies(out).values())
    named = tuple(sorted({"w1", "w2", "w3", "w4"} - {holder})[:2])
    out = h(Replicate(keys=("x",), workers=named, stimulus_id="named"))
    assert set(copies(out)) <= set(named)
    # already one holder among the named pair when n=1? ask for one there
    h2 = Harness("a", "b", "c")
    x = h2.compute("x")
    pool = tuple(w for w in ("a", "b", "c") if w != x)
    out = h2(Replicate(keys=("x",), n=1, workers=pool, stimulus_id="one"))
    assert len(copies(out)) == 1
    assert set(copies(out)) <= set(pool)


def test_replicate_ignores_keys_not_in_memory_and_unknown_workers() -> None:
    h = Harness("w1", "w2")
    assert h(Replicate(keys=("nothing",), stimulus_id="r")) == []
    holder = h.compute("x")
    assert h(Replicate(keys=("x",), workers=("gone",), stimulus_id="r")) == []
    assert h(Replicate(keys=("x",), n=1, stimulus_id="r")) == []
    assert h.holders("x") == {holder}


def _all_on_w1(*keys: str) -> Harness:
    """Keys computed while w1 was alone; then w2 joins."""
    h = Harness("w1")
    for key in keys:
        h.compute(key)
    h(AddWorker(address="w2", nthreads=1, stimulus_id="add-w2"))
    return h


def test_rebalance_moves_keys_then_drops_the_old_copies() -> None:
    h = _all_on_w1("a", "b", "c", "d")
    out = h(Rebalance(stimulus_id="bal"))
    moved = copies(out)
    assert list(moved) == ["w2"]
    assert len(moved["w2"]) == 2
    assert all(src == ("w1",) for src in moved["w2"].values())
    keys = tuple(moved["w2"])
    out = h(AddReplicas(worker="w2", keys=keys, stimulus_id="bal"))
    assert out == [FreeKeys(worker="w1", keys=keys, stimulus_id="bal")]
    for key in keys:
        assert h.holders(key) == {"w2"}
    assert h(Rebalance(stimulus_id="again")) == []  # balanced now


def test_rebalance_of_chosen_keys_and_a_failed_copy() -> None:
    h = _all_on_w1("a", "b", "c")
    out = h(Rebalance(keys=("a", "b"), stimulus_id="bal"))
    assert copies(out) in ({"w2": {"a": ("w1",)}}, {"w2": {"b": ("w1",)}})
    assert h(ReplicasFailed(worker="w2", retiring="", reason="left", stimulus_id="bal")) == []
    (key,) = next(iter(copies(out).values()))
    # the move was forgotten: a late copy does not drop the original
    assert h(AddReplicas(worker="w2", keys=(key,), stimulus_id="late")) == []
    assert h.holders(key) == {"w1", "w2"}


def test_rebalance_within_named_workers_only() -> None:
    h = _all_on_w1("a", "b")
    h(AddWorker(address="w3", nthreads=1, stimulus_id="add-w3"))
    out = h(Rebalance(workers=("w1", "w3"), stimulus_id="bal"))
    assert list(copies(out)) == ["w3"]
    assert h(Rebalance(workers=("w2",), stimulus_id="alone")) == []
