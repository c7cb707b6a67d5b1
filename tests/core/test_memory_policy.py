"""The worker memory policy (Dask's target/spill/pause/terminate), fed numbers,
and the scheduler's placement around paused workers and held threads."""

from __future__ import annotations

import pytest
from core_checks import check_scheduler

from trioclust.core.events import (
    AddClient,
    AddWorker,
    ComputeRequested,
    NewTask,
    PauseChanged,
    ReleaseKeys,
    RemoveWorker,
    SchedulerEvent,
    TaskStarted,
    ThreadsHeld,
    UpdateGraph,
    WorkerPaused,
)
from trioclust.core.instructions import (
    ComputeTask,
    Execute,
    FreeKeys,
    KeyErred,
    SchedulerInstruction,
)
from trioclust.core.memory_policy import (
    MemoryPolicy,
    MemorySample,
    MemoryThresholds,
    PauseWorker,
    ResumeWorker,
    SpillData,
    TerminateWorker,
    TrimMemory,
)
from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.worker_state import WorkerState
from trioclust.errors import KilledWorker

MiB = 2**20
LIMIT = 100 * MiB


def test_below_every_threshold_nothing_happens() -> None:
    policy = MemoryPolicy(LIMIT)
    assert policy.target_bytes == 60 * MiB
    assert policy.worker_sample(MemorySample(process=69 * MiB, managed=50 * MiB)) == []
    assert policy.nanny_sample(94 * MiB) == []


def test_no_limit_means_no_action() -> None:
    policy = MemoryPolicy(0)
    assert policy.target_bytes is None
    assert policy.worker_sample(MemorySample(process=10**12, managed=10**11)) == []
    assert policy.nanny_sample(10**12) == []


def test_over_spill_spills_until_the_process_would_be_under_target() -> None:
    policy = MemoryPolicy(LIMIT)
    out = policy.worker_sample(MemorySample(process=75 * MiB, managed=40 * MiB))
    assert out == [SpillData(nbytes=15 * MiB)]
    # never more than what is managed
    out = policy.worker_sample(MemorySample(process=79 * MiB, managed=5 * MiB))
    assert out == [SpillData(nbytes=5 * MiB)]
    # nothing managed: nothing to spill
    assert policy.worker_sample(MemorySample(process=79 * MiB, managed=0)) == []


def test_the_store_keeps_target_less_the_unmanaged_memory() -> None:
    """Results being made and the interpreter count against ``target`` too:
    the store keeps what is left of it (never below 0)."""
    policy = MemoryPolicy(LIMIT)
    assert policy.managed_target(MemorySample(process=30 * MiB, managed=10 * MiB)) == 40 * MiB
    assert policy.managed_target(MemorySample(process=90 * MiB, managed=10 * MiB)) == 0
    # room kept for the results running tasks are building
    assert policy.managed_target(MemorySample(process=30 * MiB, managed=10 * MiB), making=25 * MiB) == 15 * MiB
    assert policy.managed_target(MemorySample(process=30 * MiB, managed=10 * MiB), making=60 * MiB) == 0
    assert MemoryPolicy(0).managed_target(MemorySample(process=1, managed=0)) is None
    off = MemoryPolicy(LIMIT, MemoryThresholds(target=None))
    assert off.managed_target(MemorySample(process=30 * MiB, managed=10 * MiB)) is None


def test_over_pause_trims_first_then_pauses_then_resumes_below() -> None:
    policy = MemoryPolicy(LIMIT)
    over = MemorySample(process=85 * MiB, managed=0)
    assert policy.worker_sample(over) == [TrimMemory()]
    assert not policy.paused
    (pause,) = policy.worker_sample(over)  # measured again after trimming: still over
    assert isinstance(pause, PauseWorker)
    assert policy.paused
    assert "80%" in pause.reason
    assert "worker.memory.pause" in pause.reason
    assert policy.worker_sample(over) == []  # paused already
    assert policy.worker_sample(MemorySample(process=70 * MiB, managed=0)) == [
        ResumeWorker(process=70 * MiB)
    ]
    # a new excursion trims again before pausing
    assert policy.worker_sample(over) == [TrimMemory()]


def test_a_trim_that_helps_avoids_the_pause() -> None:
    policy = MemoryPolicy(LIMIT)
    assert policy.worker_sample(MemorySample(process=85 * MiB, managed=0)) == [TrimMemory()]
    assert policy.worker_sample(MemorySample(process=60 * MiB, managed=0)) == []
    assert not policy.paused


def test_terminate_is_the_nannys() -> None:
    policy = MemoryPolicy(LIMIT)
    (action,) = policy.nanny_sample(96 * MiB)
    assert isinstance(action, TerminateWorker)
    assert "95%" in action.reason
    assert "worker.memory.terminate" in action.reason


def test_thresholds_can_be_turned_off_and_are_checked() -> None:
    policy = MemoryPolicy(LIMIT, MemoryThresholds(target=None, spill=None, pause=None, terminate=None))
    assert policy.target_bytes is None
    assert policy.worker_sample(MemorySample(process=10 * LIMIT, managed=LIMIT)) == []
    assert policy.nanny_sample(10 * LIMIT) == []
    with pytest.raises(ValueError, match=r"worker\.memory\.pause"):
        MemoryThresholds(pause=1.5)
    with pytest.raises(ValueError, match="memory_limit"):
        MemoryPolicy(-1)


def test_unmanaged_memory_is_process_minus_managed() -> None:
    assert MemorySample(process=100, managed=30).unmanaged == 70
    assert MemorySample(process=10, managed=30).unmanaged == 0


# ------------------------------------------------------- the worker's core


def test_a_paused_worker_state_starts_nothing_until_resumed() -> None:
    ws = WorkerState(address="w", nthreads=1)
    assert ws.handle(PauseChanged(paused=True, stimulus_id="pause")) == []
    out = ws.handle(ComputeRequested(key="x", run_spec=None, who_has={}, nbytes={}, priority=0, stimulus_id="c"))
    assert out == []
    assert ws.tasks["x"].state == "ready"
    out = ws.handle(PauseChanged(paused=False, stimulus_id="resume"))
    assert out == [Execute(key="x", stimulus_id="resume")]


# ------------------------------------------------- the scheduler's placement


class Harness:
    def __init__(self, *workers: str, nthreads: int = 1, saturation: float = 2.0) -> None:
        self.s = SchedulerState(worker_saturation=saturation)
        self(AddClient(client="c", stimulus_id="hello"))
        for w in workers:
            self(AddWorker(address=w, nthreads=nthreads, stimulus_id=f"add-{w}"))

    def __call__(self, *events: SchedulerEvent) -> list[SchedulerInstruction]:
        out = self.s.handle(*events)
        check_scheduler(self.s)
        return out

    def submit(self, *keys: str) -> list[SchedulerInstruction]:
        tasks = tuple(NewTask(key=k, run_spec=f"run-{k}") for k in keys)
        return self(UpdateGraph(client="c", tasks=tasks, wanted=keys, stimulus_id=f"g-{keys}"))


def computed_on(out: list[SchedulerInstruction]) -> dict[str, str]:
    return {i.key: i.worker for i in out if isinstance(i, ComputeTask)}


def test_a_paused_worker_gets_no_new_task_until_it_resumes() -> None:
    h = Harness("a", "b")
    h(WorkerPaused(worker="a", paused=True, reason="memory", stimulus_id="pause"))
    out = h.submit(*(f"t{i}" for i in range(6)))
    where = computed_on(out)
    assert set(where.values()) == {"b"}
    assert len(where) == 2  # b's capacity; the rest wait on the scheduler
    assert h.s.count("queued") == 4
    out = h(WorkerPaused(worker="a", paused=False, stimulus_id="resume"))
    assert set(computed_on(out).values()) == {"a"}
    assert h.s.count("queued") == 2


def test_all_workers_paused_queues_everything() -> None:
    h = Harness("a")
    h(WorkerPaused(worker="a", paused=True, reason="memory", stimulus_id="pause"))
    assert computed_on(h.submit("x", "y")) == {}
    assert h.s.count("queued") == 2
    assert computed_on(h(WorkerPaused(worker="a", paused=False, stimulus_id="r"))) == {"x": "a", "y": "a"}


def test_a_task_killing_a_paused_worker_names_memory() -> None:
    s = SchedulerState(allowed_failures=0)
    s.handle(AddClient(client="c", stimulus_id="c"), AddWorker(address="a", nthreads=1, stimulus_id="a"))
    s.handle(UpdateGraph(client="c", tasks=(NewTask(key="x", run_spec="r"),), wanted=("x",), stimulus_id="g"))
    s.handle(
        TaskStarted(worker="a", key="x", stimulus_id="s"),
        WorkerPaused(worker="a", paused=True, reason="process memory 85 bytes is over 80%", stimulus_id="p"),
    )
    out = s.handle(RemoveWorker(address="a", expected=False, stimulus_id="gone"))
    (erred,) = [i for i in out if isinstance(i, KeyErred)]
    exc = s.tasks["x"].exception
    assert isinstance(exc, KilledWorker)
    assert "paused for memory" in str(exc)
    assert "80%" in str(exc)
    assert erred.key == "x"


def test_held_threads_take_back_what_waits_there_and_place_it_elsewhere() -> None:
    h = Harness("a", "b", saturation=4.0)
    out = h.submit("stuck")
    assert computed_on(out) == {"stuck": "a"}
    h(TaskStarted(worker="a", key="stuck", stimulus_id="s"))
    h(ReleaseKeys(client="c", keys=("stuck",), stimulus_id="cancel"))
    where = computed_on(h.submit(*(f"t{i}" for i in range(6))))
    on_a = sorted(k for k, w in where.items() if w == "a")
    assert on_a  # the scheduler does not know yet
    out = h(ThreadsHeld(worker="a", held=1, stimulus_id="held"))
    freed = [i for i in out if isinstance(i, FreeKeys) and i.worker == "a"]
    assert sorted(k for i in freed for k in i.keys) == on_a
    assert all(i.cancel for i in freed)
    assert set(computed_on(out).values()) <= {"b"}
    assert not h.s.workers["a"].processing
    assert all(h.s.tasks[k].processing_on is not h.s.workers["a"] for k in on_a)
    # while held, nothing new goes to a
    assert set(computed_on(h.submit("u1", "u2")).values()) <= {"b"}
    # the thread returns: a takes work again
    out = h(ThreadsHeld(worker="a", held=0, stimulus_id="free"))
    assert "a" in set(computed_on(out).values())


def test_some_threads_held_lower_capacity_without_taking_back() -> None:
    h = Harness("a", nthreads=2, saturation=1.0)
    h.submit("x")
    out = h(ThreadsHeld(worker="a", held=1, stimulus_id="held"))
    assert not [i for i in out if isinstance(i, FreeKeys)]
    assert h.s.workers["a"].capacity == 1
    assert computed_on(h.submit("y")) == {}  # x fills the one free thread
    assert h.s.count("queued") == 1
