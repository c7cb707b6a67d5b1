"""Restrictions, resources, retries and work stealing, decided in the core
without an event loop (scheduler_placement.py, scheduler_stealing.py,
worker_resources.py, WorkerState's resource accounting)."""

from __future__ import annotations

from typing import Any

import pytest
from core_checks import check_scheduler, check_worker

from trioclust.core.events import (
    AddClient,
    AddWorker,
    ComputeRequested,
    ExecuteFailed,
    ExecuteSucceeded,
    FreeRequested,
    NewTask,
    ReleaseKeys,
    RemoveWorker,
    RetryTasks,
    SchedulerEvent,
    StealLook,
    TaskErred,
    TaskFinished,
    TaskStarted,
    UpdateData,
    UpdateGraph,
    WorkerEvent,
)
from trioclust.core.instructions import (
    ComputeTask,
    Execute,
    FreeKeys,
    KeyErred,
    KeyInMemory,
    SchedulerInstruction,
    WorkerInstruction,
)
from trioclust.core.scheduler_placement import unrunnable_reason
from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.worker_state import WorkerState


class Harness:
    def __init__(self, **kwargs: Any) -> None:
        self.s = SchedulerState(**kwargs)
        self(AddClient(client="c", stimulus_id="hello"))

    def __call__(self, *events: SchedulerEvent) -> list[SchedulerInstruction]:
        out = self.s.handle(*events)
        check_scheduler(self.s)
        unstarted = sum(len(ws.processing) - ws.nstarted for ws in self.s.workers.values())
        assert self.s._unstarted == unstarted
        return out

    def worker(self, address: str, nthreads: int = 1, **kwargs: Any) -> list[SchedulerInstruction]:
        return self(AddWorker(address=address, nthreads=nthreads, stimulus_id=f"add-{address}", **kwargs))

    def submit(self, *tasks: NewTask) -> list[SchedulerInstruction]:
        keys = tuple(t.key for t in tasks)
        return self(UpdateGraph(client="c", tasks=tasks, wanted=keys, stimulus_id=f"g-{keys[0]}"))

    def where(self, key: str) -> str | None:
        ws = self.s.tasks[key].processing_on
        return None if ws is None else ws.address

    def finish(self, key: str) -> list[SchedulerInstruction]:
        w = self.where(key)
        assert w is not None
        return self(TaskFinished(worker=w, key=key, nbytes=1, stimulus_id=f"done-{key}"))

    def err(self, key: str) -> list[SchedulerInstruction]:
        w = self.where(key)
        assert w is not None
        return self(
            TaskErred(worker=w, key=key, exception="boom", exception_text="ValueError: boom",
                      stimulus_id=f"err-{key}")
        )


def computes(out: list[SchedulerInstruction]) -> list[tuple[str, str]]:
    return [(i.key, i.worker) for i in out if isinstance(i, ComputeTask)]


# --------------------------------------------------------------- workers=


def test_workers_restriction_by_address_name_and_host() -> None:
    h = Harness()
    h.worker("tcp://10.0.0.1:1000", name="alice")
    h.worker("tcp://10.0.0.2:1000", name="bob")
    h.worker("tcp://10.0.0.2:2000", name="carol")
    out = h.submit(
        NewTask(key="by-address", run_spec="r", workers=("tcp://10.0.0.2:2000",)),
        NewTask(key="by-name", run_spec="r", workers=("alice",)),
    )
    assert sorted(computes(out)) == [
        ("by-address", "tcp://10.0.0.2:2000"), ("by-name", "tcp://10.0.0.1:1000"),
    ]
    h.submit(*(NewTask(key=f"host-{i}", run_spec="r", workers=("10.0.0.2",)) for i in range(6)))
    assert {h.where(f"host-{i}") for i in range(6)} == {"tcp://10.0.0.2:1000", "tcp://10.0.0.2:2000"}


def test_a_task_for_a_missing_worker_waits_as_no_worker_until_it_joins() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    assert computes(h.submit(NewTask(key="x", run_spec="r", workers=("late",)))) == []
    assert h.s.tasks["x"].state == "no-worker"
    assert "late" in unrunnable_reason(h.s.tasks["x"])
    assert computes(h.worker("tcp://b:1", name="late")) == [("x", "tcp://b:1")]
    # the worker leaves: the task waits again, rather than running elsewhere
    h(RemoveWorker(address="tcp://b:1", stimulus_id="bye"))
    assert h.s.tasks["x"].state == "no-worker"


def test_allow_other_workers_falls_back_to_any_worker() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    out = h.submit(NewTask(key="x", run_spec="r", workers=("gone",), allow_other_workers=True))
    assert computes(out) == [("x", "tcp://a:1")]


def test_restricted_tasks_are_not_queued_by_saturation() -> None:
    h = Harness(worker_saturation=1.0)
    h.worker("tcp://a:1")
    h.submit(*(NewTask(key=f"free-{i}", run_spec="r") for i in range(3)))
    assert h.s.count("queued") == 2
    out = h.submit(*(NewTask(key=f"pinned-{i}", run_spec="r", workers=("tcp://a:1",)) for i in range(3)))
    assert len(computes(out)) == 3


# -------------------------------------------------------------- resources


def test_resources_place_tasks_only_on_workers_that_have_them() -> None:
    h = Harness()
    h.worker("tcp://cpu:1", nthreads=4)
    h.worker("tcp://gpu:1", nthreads=4, resources={"GPU": 2})
    out = h.submit(*(NewTask(key=f"g{i}", run_spec="r", resources={"GPU": 1}) for i in range(5)))
    assert {w for _, w in computes(out)} == {"tcp://gpu:1"}
    assert all(i.resources == {"GPU": 1} for i in out if isinstance(i, ComputeTask))
    # a task without resources carries none (the wire stays as it was)
    (plain,) = [i for i in h.submit(NewTask(key="p", run_spec="r")) if isinstance(i, ComputeTask)]
    assert plain.resources is None


def test_a_task_needing_resources_no_worker_has_waits_and_says_so() -> None:
    h = Harness()
    h.worker("tcp://cpu:1", resources={"GPU": 1})
    assert computes(h.submit(NewTask(key="big", run_spec="r", resources={"GPU": 2}))) == []
    assert h.s.tasks_by_state() == {"no-worker": 1}
    assert "{'GPU': 2}" in unrunnable_reason(h.s.tasks["big"])
    assert computes(h.worker("tcp://big:1", resources={"GPU": 4, "MEM": 1e10})) == [("big", "tcp://big:1")]


def test_restricted_task_with_dependencies_prefers_the_holder() -> None:
    h = Harness()
    for w in ("tcp://a:1", "tcp://b:1", "tcp://c:1"):
        h.worker(w, resources={"GPU": 1})
    h(UpdateData(client="c", who_has={"d": ("tcp://b:1",)}, nbytes={"d": 100}, stimulus_id="scatter"))
    out = h.submit(NewTask(key="x", run_spec="r", dependencies=("d",), resources={"GPU": 1}))
    assert computes(out) == [("x", "tcp://b:1")]


# ---------------------------------------------------------------- retries


def test_retries_rerun_a_task_that_raises_then_it_errs() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    h.submit(NewTask(key="flaky", run_spec="r", retries=2))
    for _ in range(2):
        out = h.err("flaky")
        assert any(isinstance(i, FreeKeys) and i.keys == ("flaky",) for i in out)
        assert computes(out) == [("flaky", "tcp://a:1")]
        assert not any(isinstance(i, KeyErred) for i in out)
    out = h.err("flaky")
    assert [i.key for i in out if isinstance(i, KeyErred)] == ["flaky"]
    assert h.s.tasks["flaky"].state == "erred"
    states = [(start, finish) for _, start, finish, _, _ in h.s.story("flaky")]
    assert states.count(("processing", "waiting")) == 2


def test_retries_then_success() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    h.submit(NewTask(key="flaky", run_spec="r", retries=1))
    h.err("flaky")
    out = h.finish("flaky")
    assert [i.key for i in out if isinstance(i, KeyInMemory)] == ["flaky"]


def test_retry_reruns_an_erred_task_and_its_erred_dependencies() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    h.submit(NewTask(key="a", run_spec="r"))
    h(UpdateGraph(client="c", tasks=(NewTask(key="b", run_spec="r", dependencies=("a",)),),
                  wanted=("b",), stimulus_id="g-b"))
    h(AddClient(client="c", stimulus_id="x"))
    # the client lets go of a: only b is wanted; a stays for lineage
    h(ReleaseKeys(client="c", keys=("a",), stimulus_id="rel-a"))
    out = h.err("a")
    assert [i.key for i in out if isinstance(i, KeyErred)] == ["b"]
    assert h.s.tasks["a"].state == h.s.tasks["b"].state == "erred"
    out = h(RetryTasks(client="c", keys=("b",), stimulus_id="retry"))
    assert computes(out) == [("a", "tcp://a:1")]
    assert h.s.tasks["b"].state == "waiting"
    assert h.s.tasks["b"].exception is None
    out = h.finish("a")
    assert computes(out) == [("b", "tcp://a:1")]
    out = h.finish("b")
    assert [i.key for i in out if isinstance(i, KeyInMemory)] == ["b"]


def test_retry_of_a_task_that_did_not_err_changes_nothing() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    h.submit(NewTask(key="a", run_spec="r"))
    assert h(RetryTasks(client="c", keys=("a", "unknown"), stimulus_id="retry")) == []
    assert h.s.tasks["a"].state == "processing"


# ---------------------------------------------------------- work stealing


def _pile_on_one_worker(h: Harness, n: int) -> None:
    """n tasks depending on data only tcp://a:1 holds: locality sends all there."""
    h(UpdateData(client="c", who_has={"data": ("tcp://a:1",)}, nbytes={"data": 8}, stimulus_id="s"))
    h.submit(*(NewTask(key=f"t{i:03d}", run_spec="r", dependencies=("data",)) for i in range(n)))
    assert all(h.where(f"t{i:03d}") == "tcp://a:1" for i in range(n))


def test_a_worker_that_joins_steals_unstarted_tasks() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    _pile_on_one_worker(h, 20)
    for key in ("t000", "t001"):  # running and queued for its thread
        h(TaskStarted(worker="tcp://a:1", key=key, stimulus_id=f"start-{key}"))
    out = h.worker("tcp://b:1")
    moved = computes(out)
    assert [w for _, w in moved] == ["tcp://b:1", "tcp://b:1"]
    # the ones a would run last, never one it started
    assert sorted(k for k, _ in moved) == ["t018", "t019"]
    cancels = [i for i in out if isinstance(i, FreeKeys)]
    assert [(i.worker, i.keys, i.cancel) for i in cancels] == [
        ("tcp://a:1", ("t019",), True), ("tcp://a:1", ("t018",), True),
    ]
    assert ("t019", "processing", "processing") in [e[:3] for e in h.s.story("t019")]
    # b asks for more as it finishes
    out = h.finish("t019")
    assert computes(out) == [("t017", "tcp://b:1")]


def test_started_tasks_are_never_stolen() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    _pile_on_one_worker(h, 5)
    for i in range(5):
        h(TaskStarted(worker="tcp://a:1", key=f"t{i:03d}", stimulus_id=f"start-{i}"))
    assert computes(h.worker("tcp://b:1")) == []


def test_no_stealing_while_queues_are_even_or_when_switched_off() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    h.worker("tcp://b:1")
    out = h.submit(*(NewTask(key=f"x{i}", run_spec="r") for i in range(3)))
    assert not any(isinstance(i, FreeKeys) for i in out)
    off = Harness(work_stealing=False)
    off.worker("tcp://a:1")
    _pile_on_one_worker(off, 10)
    assert computes(off.worker("tcp://b:1")) == []


def test_stealing_respects_restrictions_and_resources() -> None:
    h = Harness()
    h.worker("tcp://a:1", resources={"GPU": 1})
    h.submit(*(NewTask(key=f"g{i}", run_spec="r", resources={"GPU": 1}) for i in range(10)))
    assert computes(h.worker("tcp://cpu:1")) == []
    out = h.worker("tcp://gpu2:1", resources={"GPU": 1})
    assert {w for _, w in computes(out)} == {"tcp://gpu2:1"}
    assert len(computes(out)) == 2


def test_a_result_from_the_victim_after_a_steal_is_dropped() -> None:
    h = Harness()
    h.worker("tcp://a:1")
    _pile_on_one_worker(h, 10)
    h.worker("tcp://b:1")
    stolen = min(h.s.workers["tcp://b:1"].processing)
    # a had run it before the cancel reached it: its copy is dropped there
    out = h(TaskFinished(worker="tcp://a:1", key=stolen, nbytes=1, stimulus_id="late"))
    assert h.s.tasks[stolen].state == "processing"
    assert h.where(stolen) == "tcp://b:1"
    assert [(i.worker, i.keys) for i in out if isinstance(i, FreeKeys)] == [("tcp://a:1", (stolen,))]
    h.finish(stolen)
    assert h.s.tasks[stolen].who_has == {"tcp://b:1"}
    assert stolen not in h.s._stolen


def test_a_task_stranded_behind_a_long_task_moves_to_an_idle_worker() -> None:
    """The Futures page's get_client example: a task waits on two sub-tasks
    while holding a's only thread; the second sub-task, handed to a's threads
    behind it (reported started), moves to b once b is idle on two steal
    looks an interval apart, and never while a's queue moves."""
    now = [0.0]
    h = Harness(clock=lambda: now[0], stranded_after=0.1)
    h.worker("tcp://a:1")
    h.worker("tcp://b:1")
    h.submit(NewTask(key="outer", run_spec="r"))
    assert h.where("outer") == "tcp://a:1"
    h(TaskStarted(worker="tcp://a:1", key="outer", stimulus_id="s-outer"))
    h.submit(NewTask(key="sub1", run_spec="r"), NewTask(key="sub2", run_spec="r"))
    assert {h.where("sub1"), h.where("sub2")} == {"tcp://a:1", "tcp://b:1"}
    stuck = "sub1" if h.where("sub1") == "tcp://a:1" else "sub2"
    other = "sub2" if stuck == "sub1" else "sub1"
    h(TaskStarted(worker="tcp://a:1", key=stuck, stimulus_id="s-stuck"))
    h(TaskStarted(worker="tcp://b:1", key=other, stimulus_id="s-other"))
    # b busy: nothing moves however long a's queue waits
    now[0] = 5.0
    assert computes(h(StealLook(stimulus_id="look-1"))) == []
    h.finish(other)
    # b idle: the first look notes the stranded task, the next one moves it
    now[0] = 5.05
    assert computes(h(StealLook(stimulus_id="look-2"))) == []
    now[0] = 5.1
    assert computes(h(StealLook(stimulus_id="look-3"))) == []
    now[0] = 5.2
    out = h(StealLook(stimulus_id="look-4"))
    assert computes(out) == [(stuck, "tcp://b:1")]
    assert [(i.worker, i.keys, i.cancel) for i in out if isinstance(i, FreeKeys)] == [
        ("tcp://a:1", (stuck,), True)
    ]
    # the long task itself, started first, is never the one taken
    assert h.where("outer") == "tcp://a:1"
    now[0] = 9.0
    assert computes(h(StealLook(stimulus_id="look-5"))) == []


def test_a_steal_look_interval_must_be_positive() -> None:
    """``scheduler.work-stealing-interval`` of 0 would make the runtime look
    in a busy loop: refused at once."""
    with pytest.raises(ValueError, match="work-stealing-interval must be > 0"):
        SchedulerState(stranded_after=0)


def test_a_queue_that_moves_strands_nothing() -> None:
    """Tasks queued behind others that finish between looks are noted anew
    each time: nothing moves while a worker's queue keeps moving."""
    now = [0.0]
    h = Harness(clock=lambda: now[0], stranded_after=0.1)
    h.worker("tcp://a:1")
    _pile_on_one_worker(h, 2)  # one running, one queued behind it
    assert computes(h.worker("tcp://b:1")) == []  # b idle from now on
    h(TaskStarted(worker="tcp://a:1", key="t000", stimulus_id="s-t000"))
    for step in range(5):
        running, queued = f"t{step:03d}", f"t{step + 1:03d}"
        h(TaskStarted(worker="tcp://a:1", key=queued, stimulus_id=f"s-{queued}"))
        now[0] += 0.08
        assert computes(h(StealLook(stimulus_id=f"look-{step}"))) == []
        h.finish(running)
        new = f"t{step + 2:03d}"  # the next one comes to a, where its data is
        h.submit(NewTask(key=new, run_spec="r", dependencies=("data",)))
        assert h.where(new) == "tcp://a:1"


# ---------------------------------------------- the worker's resource accounting


class Worker:
    def __init__(self, nthreads: int, **kwargs: Any) -> None:
        self.w = WorkerState(address="tcp://me", nthreads=nthreads, **kwargs)

    def __call__(self, *events: WorkerEvent) -> list[WorkerInstruction]:
        out = self.w.handle(*events)
        check_worker(self.w, self.w.nthreads)
        return out


def _compute(key: str, priority: int = 0, **resources: float) -> ComputeRequested:
    return ComputeRequested(
        key=key, run_spec=f"run-{key}", priority=priority, resources=resources or None,
        stimulus_id=f"compute-{key}",
    )


def executes(out: list[WorkerInstruction]) -> list[str]:
    return [i.key for i in out if isinstance(i, Execute)]


def test_a_worker_runs_a_task_only_while_its_resources_are_free() -> None:
    w = Worker(4, resources={"GPU": 1})
    assert executes(w(_compute("g1", GPU=1), _compute("g2", GPU=1), _compute("cpu"))) == ["g1", "cpu"]
    assert w.w.available_resources == {"GPU": 0}
    assert executes(w(ExecuteSucceeded(key="cpu", value=1, stimulus_id="done-cpu"))) == []
    assert executes(w(ExecuteFailed(key="g1", exception="x", stimulus_id="fail-g1"))) == ["g2"]
    w(ExecuteSucceeded(key="g2", value=1, stimulus_id="done-g2"))
    assert w.w.available_resources == {"GPU": 1}


def test_resources_are_held_until_a_cancelled_run_returns() -> None:
    w = Worker(2, resources={"GPU": 1})
    w(_compute("g1", GPU=1), _compute("g2", GPU=1))
    assert executes(w(FreeRequested(keys=("g1",), stimulus_id="free"))) == []  # the thread still runs
    assert executes(w(ExecuteSucceeded(key="g1", value=1, stimulus_id="done"))) == ["g2"]


def test_ready_tasks_start_in_priority_order_across_both_heaps() -> None:
    w = Worker(1, resources={"GPU": 1})
    out = w(_compute("late", priority=5), _compute("gpu", priority=1, GPU=1), _compute("mid", priority=3))
    assert executes(out) == ["gpu"]
    assert executes(w(ExecuteSucceeded(key="gpu", value=1, stimulus_id="d"))) == ["mid"]
