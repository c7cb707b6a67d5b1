"""Adaptive decisions, sans I/O (core/adaptive.py): Dask's ``adaptive_target``
rule and ``Adaptive.recommendations``' wait_count, on made-up workloads."""

from __future__ import annotations

import math

import pytest

from trioclust.core.adaptive import (
    AdaptiveState,
    Measured,
    RetireWorkers,
    ScaleUp,
    WorkerLoad,
    Workload,
    adaptive_target,
    measure,
)
from trioclust.core.events import AddClient, AddWorker, NewTask, UpdateGraph
from trioclust.core.scheduler_state import SchedulerState


def worker(address: str, *, nthreads: int = 1, processing: int = 0, nbytes: int = 0,
           memory_limit: int = 1000) -> WorkerLoad:
    return WorkerLoad(address=address, nthreads=nthreads, memory_limit=memory_limit,
                      nbytes=nbytes, processing=processing)


def measured(load: Workload, planned: int, now: float) -> Measured:
    return Measured(workload=load, planned=planned, now=now, stimulus_id=f"adaptive-{now}")


def test_target_is_work_over_target_duration_capped_by_ready_tasks() -> None:
    # 200 one-second tasks, 5 s target: 40 workers; only 10 tasks: at most 10
    assert adaptive_target(Workload(ready={"inc": 200}, durations={"inc": 1.0}), 5.0, 0.5) == 40
    assert adaptive_target(Workload(ready={"inc": 10}, durations={"inc": 60.0}), 5.0, 0.5) == 10
    # a prefix that never ran counts the unknown duration
    assert adaptive_target(Workload(ready={"new": 100}), 5.0, 0.5) == 10
    # nothing to do, no workers: none
    assert adaptive_target(Workload(), 5.0, 0.5) == 0


def test_target_divides_by_threads_and_wants_one_worker_for_waiting_work() -> None:
    load = Workload(ready={"inc": 8}, durations={"inc": 10.0},
                    workers=(worker("a", nthreads=4), worker("b", nthreads=4)))
    assert adaptive_target(load, 1.0, 0.5) == 2  # 8 threads' worth = 2 workers of 4
    assert adaptive_target(Workload(ready={"inc": 1}, durations={"inc": 0.001}), 5.0, 0.5) == 1


def test_memory_past_sixty_percent_doubles_the_workers() -> None:
    full = (worker("a", nbytes=700), worker("b", nbytes=600))  # 65% of 2000
    assert adaptive_target(Workload(workers=full), 5.0, 0.5) == 4
    half = (worker("a", nbytes=600), worker("b", nbytes=500))  # 55%
    assert adaptive_target(Workload(workers=half), 5.0, 0.5) == 0


def test_scale_up_at_once_clipped_to_maximum() -> None:
    state = AdaptiveState(minimum=0, maximum=4, target_duration=0.5)
    out = state.handle(measured(Workload(ready={"inc": 200}, durations={"inc": 1.0}), 0, 0.0))
    assert out == [ScaleUp(n=4, stimulus_id="adaptive-0.0")]
    assert state.log[-1].action == "up"
    assert "target 4" in str(state.log[-1])


def test_minimum_is_kept_when_idle() -> None:
    state = AdaptiveState(minimum=2, maximum=4)
    assert state.handle(measured(Workload(), 0, 0.0)) == [ScaleUp(n=2, stimulus_id="adaptive-0.0")]
    idle = Workload(workers=(worker("a"), worker("b")))
    for now in range(1, 10):
        assert state.handle(measured(idle, 2, float(now))) == []


def test_scale_down_only_after_wait_count_decisions_least_data_first() -> None:
    state = AdaptiveState(minimum=1, maximum=4, wait_count=3)
    idle = Workload(workers=(worker("a", nbytes=30), worker("b", nbytes=10),
                             worker("c", nbytes=20), worker("d", processing=1)))
    # d is busy (1 task of unknown duration: 1 worker wanted); a, b, c are idle
    assert state.handle(measured(idle, 4, 1.0)) == []
    assert state.handle(measured(idle, 4, 2.0)) == []
    out = state.handle(measured(idle, 4, 3.0))
    assert out == [RetireWorkers(workers=("b", "c", "a"), stimulus_id="adaptive-3.0")]
    assert [d.action for d in state.log] == ["same", "same", "down"]


def test_work_arriving_resets_the_countdown() -> None:
    state = AdaptiveState(minimum=0, maximum=4, wait_count=2)
    idle = Workload(workers=(worker("a"),))
    busy = Workload(processing={"inc": 1}, durations={"inc": 1.0}, workers=(worker("a", processing=1),))
    assert state.handle(measured(idle, 1, 1.0)) == []
    assert state.handle(measured(busy, 1, 2.0)) == []  # target 1 == planned: counts cleared
    assert state.close_counts == {}
    assert state.handle(measured(idle, 1, 3.0)) == []
    assert state.handle(measured(idle, 1, 4.0)) == [RetireWorkers(workers=("a",), stimulus_id="adaptive-4.0")]


def test_a_busy_worker_is_never_retired() -> None:
    state = AdaptiveState(minimum=0, maximum=4, wait_count=1, target_duration=100.0)
    load = Workload(processing={"inc": 2}, durations={"inc": 0.1},
                    workers=(worker("a", processing=1), worker("b", processing=1)))
    # target 1 < planned 2, but both are busy: nobody leaves
    assert state.handle(measured(load, 2, 1.0)) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minimum": 3, "maximum": 2}, "minimum <= maximum"),
        ({"wait_count": 0}, "wait_count"),
        ({"target_duration": 0}, "target_duration"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaptiveState(**kwargs)  # type: ignore[arg-type]


def test_measure_reads_the_scheduler_state() -> None:
    state = SchedulerState()
    state.handle(AddWorker(address="tcp://w:1", nthreads=2, memory_limit=1000, stimulus_id="add"))
    state.handle(AddClient(client="c", stimulus_id="c"))
    tasks = tuple(NewTask(key=f"inc-{i}", run_spec=None, dependencies=(), priority=i) for i in range(5))
    state.handle(UpdateGraph(client="c", tasks=tasks, wanted=tuple(t.key for t in tasks), stimulus_id="g"))
    load = measure(state, {"inc": 2.0}, lambda key: key.split("-")[0])
    assert sum(load.processing.values()) + sum(load.ready.values()) == 5
    assert set(load.processing) <= {"inc"}
    assert load.durations == {"inc": 2.0}
    assert [w.address for w in load.workers] == ["tcp://w:1"]
    assert load.workers[0].processing == load.processing.get("inc", 0)
    assert not math.isinf(AdaptiveState().target(load))
