"""The scheduler's delivery decisions, made in the core without an event loop:
urgency of instructions, task reports and results told early, retiring workers."""

from __future__ import annotations

from core_checks import check_scheduler

from trioclust.core.events import (
    AddClient,
    AddReplicas,
    AddWorker,
    NewTask,
    ReleaseKeys,
    RemoveWorker,
    ReplicasFailed,
    RetireWorkers,
    SchedulerEvent,
    TaskFinished,
    TaskStarted,
    UpdateGraph,
    WantKeys,
)
from trioclust.core.instructions import (
    AcquireReplicas,
    CloseWorker,
    ComputeTask,
    FreeKeys,
    KeyInMemory,
    SchedulerInstruction,
)
from trioclust.core.scheduler_state import SchedulerState


class Harness:
    def __init__(self, *workers: str, nthreads: int = 1) -> None:
        self.s = SchedulerState()
        self(AddClient(client="c", stimulus_id="hello"))
        for w in workers:
            self(AddWorker(address=w, nthreads=nthreads, stimulus_id=f"add-{w}"))

    def __call__(self, *events: SchedulerEvent) -> list[SchedulerInstruction]:
        out = self.s.handle(*events)
        check_scheduler(self.s)
        return out

    def submit(self, *keys: str, client: str = "c") -> list[SchedulerInstruction]:
        tasks = tuple(NewTask(key=k, run_spec=f"run-{k}") for k in keys)
        return self(UpdateGraph(client=client, tasks=tasks, wanted=keys, stimulus_id=f"g-{keys}"))

    def finish(self, key: str, nbytes: int = 1) -> list[SchedulerInstruction]:
        ts = self.s.tasks[key]
        assert ts.processing_on is not None
        return self(finished(ts.processing_on.address, key, nbytes))

    def where(self, key: str) -> str:
        ts = self.s.tasks[key]
        assert ts.processing_on is not None
        return ts.processing_on.address


def finished(worker: str, key: str, nbytes: int = 1, value: object = None) -> TaskFinished:
    return TaskFinished(
        worker=worker, key=key, nbytes=nbytes, type_name="int", value=value,
        stimulus_id=f"finished-{key}",
    )


# ------------------------------------------------------------------ urgency


def test_compute_task_is_urgent_until_the_worker_has_more_tasks_than_threads() -> None:
    h = Harness("w1", nthreads=2)
    out = h.submit("a", "b", "c")  # one pass: the worker ends with 3 tasks for 2 threads
    assert [i.key for i in out if isinstance(i, ComputeTask)] == ["a", "b", "c"]
    assert [i.urgent for i in out if isinstance(i, ComputeTask)] == [False] * 3
    h2 = Harness("w1", nthreads=2)
    out = h2.submit("a", "b")
    assert [i.urgent for i in out if isinstance(i, ComputeTask)] == [True, True]


def test_key_in_memory_is_urgent_only_when_nothing_else_is_processing() -> None:
    h = Harness("w1", "w2")
    h.submit("a", "b")
    (first,) = h.finish("a")
    assert isinstance(first, KeyInMemory)
    assert not first.urgent
    (last,) = h.finish("b")
    assert isinstance(last, KeyInMemory)
    assert last.urgent


def test_dropping_data_is_lazy_and_cancelling_work_is_not() -> None:
    h = Harness("w1")
    h.submit("a", "b")
    h.finish("a")
    (drop,) = h(ReleaseKeys(client="c", keys=("a",), stimulus_id="rel-a"))
    assert isinstance(drop, FreeKeys)
    assert drop.lazy
    assert not drop.cancel
    out = h(ReleaseKeys(client="c", keys=("b",), stimulus_id="rel-b"))
    assert [(i.keys, i.lazy) for i in out if isinstance(i, FreeKeys)] == [(("b",), False)]


# ----------------------------------------------------- reports and early results


def test_the_first_result_reported_is_told_at_once_and_not_again_by_the_pass() -> None:
    h = Harness("w1", "w2")
    h(AddClient(client="c2", stimulus_id="hello-2"))
    h.submit("a", "b")
    h.submit("a", client="c2")
    wa, wb = h.where("a"), h.where("b")
    early = h.s.report(finished(wa, "a", value=5))
    assert early == [
        KeyInMemory(client=c, key="a", type_name="int", value=5, stimulus_id="finished-a")
        for c in ("c", "c2")
    ]
    assert not any(i.urgent for i in early)  # b is still processing
    assert h.s.report(finished(wb, "b")) == []  # only the round's first is told early
    assert h.s.has_reports
    assert h.s.tasks["a"].state == "processing"  # nothing changes before the pass
    out = h()  # the round's pass
    assert out == [KeyInMemory(client="c", key="b", type_name="int", stimulus_id="finished-b")]
    assert not h.s.has_reports
    assert (h.s.tasks["a"].state, h.s.tasks["b"].state) == ("memory", "memory")
    # the next round tells its first result early again
    h.submit("x")
    assert h.s.report(finished(h.where("x"), "x"))[0].urgent  # nothing else runs: urgent


def test_a_report_is_told_early_only_if_its_task_is_processing_on_its_sender() -> None:
    h = Harness("w1", "w2")
    h.submit("a")
    elsewhere = "w2" if h.where("a") == "w1" else "w1"
    assert h.s.report(finished(elsewhere, "a")) == []
    h()  # a stale report: dropped there
    assert h.s.report(finished(h.where("a"), "gone")) == []  # the round's early tell is used up
    h()
    assert h.s.report(TaskStarted(worker=h.where("a"), key="a", stimulus_id="s")) == []
    assert h.s.report(finished(h.where("a"), "a"))  # a TaskStarted does not use it up
    h()
    assert h.s.tasks["a"].state == "memory"


def test_events_see_the_reports_gathered_before_them() -> None:
    """A client told early may drop the key and submit it again before the
    round's pass: the report is handled first, so the new run is computed and
    its result told (the old report does not count as told for it)."""
    h = Harness("w1")
    h.submit("k")
    w = h.where("k")
    assert h.s.report(finished(w, "k", value=1))
    assert h(ReleaseKeys(client="c", keys=("k",), stimulus_id="drop")) == [
        FreeKeys(worker=w, keys=("k",), stimulus_id="drop")
    ]
    assert "k" not in h.s.tasks  # in memory when released: forgotten
    h.submit("k")
    assert h.s.tasks["k"].state == "processing"
    assert h(finished(w, "k", value=2)) == [
        KeyInMemory(client="c", key="k", type_name="int", value=2, stimulus_id="finished-k")
    ]
    # asked again later, a told client hears of it like any other
    assert h(WantKeys(client="c", keys=("k",), stimulus_id="again")) == [
        KeyInMemory(client="c", key="k", type_name="int", stimulus_id="again")
    ]


# ------------------------------------------------------------ retiring workers


def test_workers_to_retire_are_those_holding_the_least_data() -> None:
    h = Harness("w1", "w2", "w3")
    h.submit("a", "b")
    h.finish("a", nbytes=100)
    h.finish("b", nbytes=10)
    holders = {next(iter(h.s.tasks[k].who_has)): k for k in ("a", "b")}
    empty = ({"w1", "w2", "w3"} - set(holders)).pop()
    by_b = next(w for w, k in holders.items() if k == "b")
    assert h.s.workers_to_retire(2) == (empty, by_b)
    assert h.s.workers_to_retire(0) == ()


def test_retiring_moves_the_keys_only_it_holds_then_closes_it() -> None:
    h = Harness("w1", "w2", "w3")
    for key in ("a", "b", "c"):  # one worker each: each holds its own
        h.submit(key)
    placed = {k: h.where(k) for k in ("a", "b", "c")}
    for key in ("a", "b", "c"):
        h.finish(key)
    retiring = placed["a"]
    others = [w for w in h.s.workers if w != retiring]
    out = h(RetireWorkers(workers=(retiring,), stimulus_id="retire"))
    assert out == [
        AcquireReplicas(worker=others[0], who_has={"a": (retiring,)}, retiring=retiring,
                        stimulus_id="retire")
    ]
    assert h.s.retiring == {retiring}
    assert h.s.workers_to_retire(3) == tuple(sorted(others))  # not chosen twice
    out = h(AddReplicas(worker=others[0], keys=("a",), retiring=retiring, stimulus_id="retire"))
    assert out == [CloseWorker(worker=retiring, reason="retired by the scheduler", stimulus_id="retire")]
    assert h.s.tasks["a"].who_has == {retiring, others[0]}
    assert h.s.retiring == frozenset()
    h(RemoveWorker(address=retiring, expected=True, stimulus_id="gone"))
    assert h.s.tasks["a"].state == "memory"  # nothing to recompute


def test_a_retiring_worker_with_nothing_only_it_holds_is_closed_at_once() -> None:
    h = Harness("w1", "w2")
    assert h(RetireWorkers(workers=("w1", "nobody"), stimulus_id="r")) == [
        CloseWorker(worker="w1", reason="retired by the scheduler", stimulus_id="r")
    ]


def test_a_failed_copy_still_lets_the_worker_leave() -> None:
    h = Harness("w1", "w2", "w3")
    h.submit("a", "b")
    h.finish("a")
    h.finish("b")
    retiring = next(iter(h.s.tasks["a"].who_has))
    plans = [i for i in h(RetireWorkers(workers=(retiring,), stimulus_id="r"))
             if isinstance(i, AcquireReplicas)]
    assert plans, "a is only on the retiring worker"
    out: list[SchedulerInstruction] = []
    for plan in plans:
        out += h(ReplicasFailed(worker=plan.worker, retiring=retiring, reason="left", stimulus_id="r"))
    assert out == [CloseWorker(worker=retiring, reason="retired by the scheduler", stimulus_id="r")]


def test_a_retiring_worker_that_dies_meanwhile_is_forgotten_as_retiring() -> None:
    h = Harness("w1", "w2")
    h.submit("a")
    h.finish("a")
    retiring = next(iter(h.s.tasks["a"].who_has))
    h(RetireWorkers(workers=(retiring,), stimulus_id="r"))
    assert h.s.retiring == {retiring}
    h(RemoveWorker(address=retiring, expected=False, stimulus_id="dead"))
    assert h.s.retiring == frozenset()
    other = next(iter(h.s.workers))
    # the late answer of the copy closes nothing
    out = h(ReplicasFailed(worker=other, retiring=retiring, reason="source died", stimulus_id="r"))
    assert not [i for i in out if isinstance(i, CloseWorker)]
