"""Seceded tasks (``secede()``, ``worker_client``) in the core: a task that
waits on tasks it launched gives its slot back, on the worker and on the
scheduler ("Launch Tasks from Tasks", task-launch.rst of Dask's docs)."""

from __future__ import annotations

from test_scheduler_state import Harness as SchedulerHarness
from test_scheduler_state import compute as compute_task
from test_scheduler_state import done, graph, in_memory, nt
from test_worker_state import Harness as WorkerHarness
from test_worker_state import compute, finished, ok

from trioclust.core.events import ExecuteFailed, FreeRequested, Seceded, TaskSeceded
from trioclust.core.instructions import Execute, SendLongRunning, SendTaskErred


def test_a_seceded_task_frees_its_slot_and_tells_the_scheduler() -> None:
    h = WorkerHarness(nthreads=1)
    assert h(compute("parent")) == [Execute(key="parent", stimulus_id="compute-parent")]
    assert h(compute("child")) == []  # the one slot is taken
    out = h(Seceded(key="parent", stimulus_id="secede"))
    assert out == [
        SendLongRunning(key="parent", stimulus_id="secede"),
        Execute(key="child", stimulus_id="secede"),
    ]
    assert h.w.executing == {"parent", "child"}
    assert h.w.long_running == {"parent"}
    # seceding twice says nothing more
    assert h(Seceded(key="parent", stimulus_id="again")) == []
    assert h(ok("child", 1)) == [finished("child")]
    assert h(ok("parent", 2)) == [finished("parent")]
    assert h.w.executing == set()
    assert h.w.long_running == set()


def test_a_seceded_task_that_fails_leaves_long_running() -> None:
    h = WorkerHarness(nthreads=1)
    h(compute("parent"))
    h(Seceded(key="parent", stimulus_id="secede"))
    out = h(ExecuteFailed(key="parent", exception="boom", exception_text="E: boom", stimulus_id="x"))
    assert out == [SendTaskErred(key="parent", exception="boom", exception_text="E: boom", stimulus_id="x")]
    assert h.w.long_running == set()


def test_secede_of_a_task_not_executing_is_ignored() -> None:
    h = WorkerHarness(nthreads=1)
    assert h(Seceded(key="nothing", stimulus_id="s")) == []
    h(compute("a"))
    h(FreeRequested(keys=("a",), stimulus_id="free"))  # cancelled while running
    assert h(Seceded(key="a", stimulus_id="s")) == []
    assert h.w.long_running == set()


def test_the_scheduler_sends_queued_tasks_to_a_worker_whose_task_seceded() -> None:
    h = SchedulerHarness("w1", nthreads=1, worker_saturation=1.0)
    assert h(graph(nt("fib-12"))) == [compute_task("w1", "fib-12")]
    # the task submits its two sub-tasks: the worker is saturated, they queue
    assert h(graph(nt("fib-11"), nt("fib-10"))) == []
    assert h.s.tasks_by_state() == {"processing": 1, "queued": 2}
    out = h(TaskSeceded(worker="w1", key="fib-12", stimulus_id="secede"))
    assert out == [compute_task("w1", "fib-11", stim="secede")]
    assert h.s.workers["w1"].long_running == {"fib-12"}
    assert h.s.workers["w1"].occupancy == 1.0
    out = h(done("w1", "fib-11"))
    assert out == [in_memory("fib-11"), compute_task("w1", "fib-10", stim="f")]
    h(done("w1", "fib-10"))
    out = h(done("w1", "fib-12"))
    assert out == [in_memory("fib-12")]
    assert h.s.workers["w1"].long_running == set()


def test_a_secede_from_another_worker_or_for_an_unknown_key_is_ignored() -> None:
    h = SchedulerHarness("w1", "w2", nthreads=1, worker_saturation=1.0)
    h(graph(nt("a")))
    worker = h.s.tasks["a"].processing_on
    assert worker is not None
    other = "w2" if worker.address == "w1" else "w1"
    assert h(TaskSeceded(worker=other, key="a", stimulus_id="s")) == []
    assert h(TaskSeceded(worker="w1", key="unknown", stimulus_id="s")) == []
    assert all(not ws.long_running for ws in h.s.workers.values())


def test_results_are_urgent_while_only_seceded_tasks_are_processing() -> None:
    # a seceded task waits on its sub-tasks' results: they must not linger
    h = SchedulerHarness("w1", nthreads=1)
    h(graph(nt("parent")))
    h(TaskSeceded(worker="w1", key="parent", stimulus_id="secede"))
    out = h(graph(nt("child")))
    assert out == [compute_task("w1", "child")]
    assert out[0].urgent  # the worker's thread is free: at once
    out = h(done("w1", "child"))
    assert out == [in_memory("child")]
    assert out[0].urgent


def test_a_result_is_urgent_while_only_a_seceded_task_runs_beside_it() -> None:
    h = WorkerHarness(nthreads=1)
    h(compute("parent"))
    h(Seceded(key="parent", stimulus_id="secede"))
    h(compute("child"))
    out = h(ok("child", 1))
    assert out == [finished("child")]
    assert out[0].urgent
