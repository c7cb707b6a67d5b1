"""Root tasks (no dependencies, but dependents: a reduction's leaves) are sent
few at a time to a worker whose stored data nears a fraction of its memory
limit, so that a reduction over many big chunks holds a few per worker."""

from __future__ import annotations

import pytest
from core_checks import check_scheduler

from trioclust.core.events import (
    AddClient,
    AddWorker,
    NewTask,
    SchedulerEvent,
    TaskFinished,
    UpdateGraph,
)
from trioclust.core.instructions import ComputeTask, SchedulerInstruction
from trioclust.core.scheduler_state import SchedulerState


class Harness:
    def __init__(self, *, memory_limit: int = 1000, **kwargs: float) -> None:
        self.s = SchedulerState(**kwargs)  # type: ignore[arg-type]
        self(AddClient(client="c", stimulus_id="add-client"))
        self(AddWorker(address="w", nthreads=1, memory_limit=memory_limit, stimulus_id="add-w"))

    def __call__(self, *events: SchedulerEvent) -> list[SchedulerInstruction]:
        out = self.s.handle(*events)
        check_scheduler(self.s)
        return out

    def sent(self, *events: SchedulerEvent) -> list[str]:
        return [str(i.key) for i in self(*events) if isinstance(i, ComputeTask)]


def reduction(n: int) -> UpdateGraph:
    """Leaves l0..l{n-1} summed in pairs (s0 = l0 + l1, ...), then one total;
    priorities in dask.order's order: each pair's sum right after its leaves."""
    tasks: list[NewTask] = []
    for i in range(0, n, 2):
        tasks += [
            NewTask(key=f"l{i}", run_spec="leaf", dependencies=(), priority=3 * i // 2),
            NewTask(key=f"l{i + 1}", run_spec="leaf", dependencies=(), priority=3 * i // 2 + 1),
            NewTask(
                key=f"s{i // 2}", run_spec="add", dependencies=(f"l{i}", f"l{i + 1}"),
                priority=3 * i // 2 + 2,
            ),
        ]
    tasks.append(
        NewTask(
            key="total", run_spec="sum", dependencies=tuple(f"s{j}" for j in range(n // 2)),
            priority=10 * n,
        )
    )
    return UpdateGraph(client="c", tasks=tuple(tasks), wanted=("total",), stimulus_id="g")


def done(key: str, nbytes: int) -> TaskFinished:
    return TaskFinished(
        worker="w", key=key, nbytes=nbytes, type_name="x", value=None, stimulus_id=f"done-{key}"
    )


SETTINGS = {"worker_saturation": 4.0, "root_saturation": 1.0, "root_memory_fraction": 0.1}


def test_big_leaves_go_one_at_a_time_once_the_worker_holds_data() -> None:
    h = Harness(**SETTINGS)
    # nothing stored yet: a full round of leaves, in priority order
    assert h.sent(reduction(20)) == ["l0", "l1", "l2", "l3"]
    # 60 of the 100 bytes allowed stored, 3 leaves in flight at 60 each: no more leaves
    assert h.sent(done("l0", 60)) == []
    # the pair's sum goes at once (it has dependencies), no leaf joins it
    assert h.sent(done("l1", 60)) == ["s0"]
    assert h.sent(done("s0", 60)) == []  # l2 and l3 still in flight
    assert h.sent(done("l2", 60)) == []
    assert h.sent(done("l3", 60)) == ["s1"]
    # one task in flight is below root_capacity: the next leaf goes
    assert h.sent(done("s1", 60)) == ["l4"]
    assert h.s.tasks_by_state()["queued"] == 15


def test_small_leaves_keep_the_full_capacity() -> None:
    h = Harness(**SETTINGS)
    assert h.sent(reduction(20)) == ["l0", "l1", "l2", "l3"]
    assert h.sent(done("l0", 8)) == ["l4"]
    assert h.sent(done("l1", 8)) == ["s0"]  # four in flight: full
    assert h.sent(done("s0", 8)) == ["l5"]


def test_tasks_that_feed_nothing_keep_the_full_capacity() -> None:
    h = Harness(**SETTINGS)
    tasks = tuple(NewTask(key=f"m{i}", run_spec="f", dependencies=(), priority=i) for i in range(8))
    wanted = tuple(t.key for t in tasks)
    assert h.sent(UpdateGraph(client="c", tasks=tasks, wanted=wanted, stimulus_id="m")) == [
        "m0", "m1", "m2", "m3"
    ]
    assert h.sent(done("m0", 500)) == ["m4"]  # far over the fraction: no matter


def test_without_a_memory_limit_root_tasks_are_not_limited() -> None:
    h = Harness(memory_limit=0, **SETTINGS)
    assert h.sent(reduction(20)) == ["l0", "l1", "l2", "l3"]
    assert h.sent(done("l0", 10**9)) == ["l4"]


def test_a_bad_root_saturation_is_refused() -> None:
    with pytest.raises(ValueError, match="root_saturation must be > 0"):
        SchedulerState(root_saturation=0.0)
