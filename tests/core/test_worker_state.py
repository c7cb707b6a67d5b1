"""WorkerState: feed events, compare the instructions with what should happen."""

from __future__ import annotations

from typing import Any

import pytest
from core_checks import check_worker

from trioclust.core.events import (
    ComputeRequested,
    DataUpdated,
    ExecuteFailed,
    ExecuteSucceeded,
    FreeRequested,
    GatherFailed,
    GatherSucceeded,
    SlotsChanged,
    WorkerEvent,
)
from trioclust.core.instructions import (
    CancelExecute,
    Execute,
    Gather,
    SendMissingData,
    SendReschedule,
    SendTaskErred,
    SendTaskFinished,
    WorkerInstruction,
)
from trioclust.core.worker_state import WorkerState

ME = "tcp://me"


class Harness:
    """A WorkerState whose invariants are checked after every step."""

    def __init__(self, nthreads: int = 1, **kwargs: Any) -> None:
        self.w = WorkerState(address=ME, nthreads=nthreads, **kwargs)
        self.most_slots = nthreads

    def __call__(self, *events: WorkerEvent) -> list[WorkerInstruction]:
        out = self.w.handle(*events)
        check_worker(self.w, self.most_slots)
        self.most_slots = max(self.most_slots, self.w.nthreads)
        return out

    def state(self, key: str) -> str:
        ts = self.w.tasks.get(key)
        return "forgotten" if ts is None else ts.state


def compute(
    key: str, who_has: dict[str, tuple[str, ...]] | None = None, *, priority: int = 0
) -> ComputeRequested:
    who_has = who_has or {}
    return ComputeRequested(
        key=key,
        run_spec=f"run-{key}",
        who_has=who_has,
        nbytes=dict.fromkeys(who_has, 10),
        priority=priority,
        stimulus_id=f"compute-{key}",
    )


def ok(key: str, value: object = None, nbytes: int = 8) -> ExecuteSucceeded:
    return ExecuteSucceeded(
        key=key, value=value, nbytes=nbytes, type_name="int", stimulus_id=f"done-{key}"
    )


def finished(key: str, nbytes: int = 8) -> SendTaskFinished:
    return SendTaskFinished(key=key, nbytes=nbytes, type_name="int", stimulus_id=f"done-{key}")


def test_compute_with_local_dependency() -> None:
    h = Harness()
    assert h(compute("a")) == [Execute(key="a", stimulus_id="compute-a")]
    assert h.w.executing == {"a"}
    assert h(ok("a", 1)) == [finished("a")]
    assert h.w.data == {"a": 1}
    assert h(compute("b", {"a": (ME,)})) == [Execute(key="b", stimulus_id="compute-b")]
    assert [d.key for d in h.w.tasks["b"].dependencies] == ["a"]
    assert h(ok("b", 2)) == [finished("b")]
    # a was computed here at the scheduler's request: it stays until freed.
    assert h.w.data == {"a": 1, "b": 2}
    assert h(FreeRequested(keys=("a", "b", "unknown"), stimulus_id="free-requested")) == []
    assert h.w.data == {}
    assert h.w.tasks == {}


def test_dependencies_on_one_peer_are_fetched_in_one_gather() -> None:
    h = Harness()
    out = h(compute("z", {"a": ("p1",), "b": ("p1",), "c": ("p1", "p2")}))
    assert out == [Gather(peer="p1", keys=("a", "b", "c"), stimulus_id="compute-z")]
    assert h.w.tasks_by_state() == {"waiting": 1, "flight": 3}
    out = h(GatherSucceeded(peer="p1", data={"a": 1, "b": 2, "c": 3}, stimulus_id="got"))
    assert out == [Execute(key="z", stimulus_id="got")]
    assert h(ok("z", 6)) == [finished("z")]
    # Fetched dependencies are dropped once no local task needs them.
    assert h.w.data == {"z": 6}
    assert set(h.w.tasks) == {"z"}


def test_fetch_spreads_over_peers_and_respects_the_limits() -> None:
    h = Harness(max_concurrent_gathers=2)
    out = h(compute("z", {"a": ("p1",), "b": ("p2",), "c": ("p3",), "d": ("p1", "p3")}))
    # d goes with a to p1 (equal counts, p1 first); p3 waits for a free slot.
    assert out == [
        Gather(peer="p1", keys=("a", "d"), stimulus_id="compute-z"),
        Gather(peer="p2", keys=("b",), stimulus_id="compute-z"),
    ]
    assert h(compute("y", {"e": ("p1",)})) == []  # one gather per peer
    out = h(GatherSucceeded(peer="p2", data={"b": 2}, stimulus_id="g2"))
    assert out == [Gather(peer="p3", keys=("c",), stimulus_id="g2")]
    out = h(GatherSucceeded(peer="p1", data={"a": 1, "d": 4}, stimulus_id="g1"))
    assert out == [Gather(peer="p1", keys=("e",), stimulus_id="g1")]
    out = h(GatherSucceeded(peer="p3", data={"c": 3}, stimulus_id="g3"))
    assert out == [Execute(key="z", stimulus_id="g3")]


def test_missing_dependency_without_other_holder_gives_the_task_back() -> None:
    h = Harness()
    h(compute("z", {"a": ("p1",), "b": ("p2",)}))
    h(GatherSucceeded(peer="p2", data={"b": 2}, stimulus_id="gather-succeeded"))
    out = h(GatherSucceeded(peer="p1", data={}, stimulus_id="miss"))
    assert out == [
        SendMissingData(key="a", errant_worker="p1", stimulus_id="miss"),
        SendReschedule(key="z", stimulus_id="miss"),
    ]
    assert h.w.tasks == {}
    assert h.w.data == {}


def test_gather_failure_refetches_from_another_holder() -> None:
    h = Harness()
    assert h(compute("z", {"a": ("p1", "p2"), "b": ("p1", "p2")})) == [
        Gather(peer="p1", keys=("a", "b"), stimulus_id="compute-z")
    ]
    # y also needs x, for now only held by p1 and p3
    assert h(compute("y", {"x": ("p3", "p1")})) == [
        Gather(peer="p3", keys=("x",), stimulus_id="compute-y")
    ]
    out = h(GatherFailed(peer="p1", keys=("a", "b"), reason="connection reset", stimulus_id="f"))
    assert out == [
        SendMissingData(key="a", errant_worker="p1", stimulus_id="f"),
        SendMissingData(key="b", errant_worker="p1", stimulus_id="f"),
        Gather(peer="p2", keys=("a", "b"), stimulus_id="f"),
    ]
    assert h.w.tasks["x"].who_has == ["p3"]  # p1 is no longer counted on


def test_gather_failure_gives_back_tasks_whose_data_only_that_peer_had() -> None:
    h = Harness()
    assert h(compute("z", {"a": ("p1",)})) == [
        Gather(peer="p1", keys=("a",), stimulus_id="compute-z")
    ]
    assert h(compute("y", {"b": ("p1",)})) == []  # p1 is busy: b waits its turn
    out = h(GatherFailed(peer="p1", keys=("a",), stimulus_id="f"))
    assert out == [
        SendMissingData(key="a", errant_worker="p1", stimulus_id="f"),
        SendReschedule(key="z", stimulus_id="f"),
        SendReschedule(key="y", stimulus_id="f"),
    ]
    assert h.w.tasks == {}


def test_only_listed_holder_is_this_worker_but_data_is_gone() -> None:
    h = Harness()
    out = h(compute("z", {"a": (ME,)}))
    assert out == [
        SendMissingData(key="a", errant_worker=ME, stimulus_id="compute-z"),
        SendReschedule(key="z", stimulus_id="compute-z"),
    ]
    assert h.w.tasks == {}


def test_nthreads_limits_concurrent_execution() -> None:
    h = Harness(nthreads=2)
    out = h(compute("a"), compute("b"), compute("c"))
    assert out == [
        Execute(key="a", stimulus_id="compute-c"),
        Execute(key="b", stimulus_id="compute-c"),
    ]
    assert h.state("c") == "ready"
    assert h(ok("a")) == [finished("a"), Execute(key="c", stimulus_id="done-a")]


def test_slots_changed_starts_more_at_once_and_fewer_as_tasks_end() -> None:
    h = Harness(nthreads=1)
    out = h(compute("a"), compute("b"), compute("c"), compute("d"))
    assert out == [Execute(key="a", stimulus_id="compute-d")]
    more = SlotsChanged(slots=3, stimulus_id="deeper")
    assert h(more) == [
        Execute(key="b", stimulus_id="deeper"),
        Execute(key="c", stimulus_id="deeper"),
    ]
    assert h.w.executing == {"a", "b", "c"}
    fewer = SlotsChanged(slots=1, stimulus_id="shallower")
    assert h(fewer) == [], "nothing running is taken back"
    assert h(ok("a")) == [finished("a")]
    assert h(ok("b")) == [finished("b")]
    assert h(ok("c")) == [finished("c"), Execute(key="d", stimulus_id="done-c")]
    with pytest.raises(ValueError, match="slots must be >= 1"):
        h.w.handle(SlotsChanged(slots=0, stimulus_id="slots-changed"))


def test_priority_order() -> None:
    h = Harness(nthreads=1)
    out = h(compute("low", priority=5), compute("high", priority=-3), compute("mid", priority=1))
    assert out == [Execute(key="high", stimulus_id="compute-mid")]
    assert h(ok("high")) == [finished("high"), Execute(key="mid", stimulus_id="done-high")]
    assert h(ok("mid")) == [finished("mid"), Execute(key="low", stimulus_id="done-mid")]


def test_free_while_executing_cancels_and_drops_the_result() -> None:
    h = Harness()
    h(compute("a"))
    assert h(FreeRequested(keys=("a",), stimulus_id="free")) == [
        CancelExecute(key="a", stimulus_id="free")
    ]
    assert h.state("a") == "cancelled"
    assert h(compute("b")) == []  # the thread is still busy
    assert h(ok("a", 1)) == [Execute(key="b", stimulus_id="done-a")]
    assert "a" not in h.w.data
    assert "a" not in h.w.tasks


def test_recompute_after_cancel_resumes_the_running_task() -> None:
    h = Harness()
    h(compute("a"))
    h(FreeRequested(keys=("a",), stimulus_id="free-requested"))
    assert h(compute("a")) == []  # no second Execute: the first is still running
    assert h.state("a") == "executing"
    assert h(ok("a", 1)) == [finished("a")]
    assert h.w.data == {"a": 1}


def test_cancelled_task_still_running_serves_a_new_local_dependent() -> None:
    h = Harness(nthreads=2)
    h(compute("a"))
    h(FreeRequested(keys=("a",), stimulus_id="free-requested"))
    # The scheduler now says a is on p1, but our thread may still deliver it.
    assert h(compute("b", {"a": ("p1",)})) == []
    assert h.state("b") == "waiting"
    assert h(ok("a", 1)) == [Execute(key="b", stimulus_id="done-a")]  # not reported
    h(ok("b", 2))
    assert h.w.data == {"b": 2}


def test_cancelled_task_that_fails_is_fetched_for_its_local_dependent() -> None:
    h = Harness(nthreads=2)
    h(compute("a"))
    h(FreeRequested(keys=("a",), stimulus_id="free-requested"))
    h(compute("b", {"a": ("p1",)}))
    out = h(ExecuteFailed(key="a", exception=RuntimeError("cancelled"), stimulus_id="x"))
    assert out == [Gather(peer="p1", keys=("a",), stimulus_id="x")]
    assert h(GatherSucceeded(peer="p1", data={"a": 1}, stimulus_id="g")) == [
        Execute(key="b", stimulus_id="g")
    ]


def test_free_while_in_flight_drops_the_data_on_arrival() -> None:
    h = Harness()
    h(compute("z", {"a": ("p1",)}))
    assert h(FreeRequested(keys=("z",), stimulus_id="free-requested")) == []
    assert h.state("a") == "cancelled"
    assert h(GatherSucceeded(peer="p1", data={"a": 1}, stimulus_id="gather-succeeded")) == []
    assert h.w.tasks == {}
    assert h.w.data == {}


def test_flight_dependency_needed_again_before_arrival() -> None:
    h = Harness()
    h(compute("z", {"a": ("p1",)}))
    h(FreeRequested(keys=("z",), stimulus_id="free-requested"))
    assert h(compute("y", {"a": ("p1",)})) == []  # already on its way
    assert h.state("a") == "flight"
    assert h(GatherSucceeded(peer="p1", data={"a": 1}, stimulus_id="g")) == [
        Execute(key="y", stimulus_id="g")
    ]


def test_execute_failed_reports_and_is_freed_later() -> None:
    h = Harness()
    h(compute("a"))
    exc = ValueError("bad")
    out = h(
        ExecuteFailed(key="a", exception=exc, traceback="tb", exception_text="bad", stimulus_id="x")
    )
    assert out == [
        SendTaskErred(key="a", exception=exc, traceback="tb", exception_text="bad", stimulus_id="x")
    ]
    assert h.state("a") == "error"
    assert h.w.executing == set()
    h(FreeRequested(keys=("a",), stimulus_id="free-requested"))
    assert h.w.tasks == {}


def test_compute_requested_for_a_key_in_memory_reports_again() -> None:
    h = Harness()
    h(DataUpdated(data={"a": 1}, nbytes={"a": 4}, stimulus_id="data-updated"))
    assert h(compute("a")) == [SendTaskFinished(key="a", nbytes=4, stimulus_id="compute-a")]
    assert h(compute("a")) == [SendTaskFinished(key="a", nbytes=4, stimulus_id="compute-a")]


def test_data_updated_unblocks_a_waiting_task() -> None:
    h = Harness()
    h(compute("z", {"a": ("p1",), "b": ("p1",)}))
    assert h(DataUpdated(data={"b": 2}, stimulus_id="scatter")) == []
    out = h(GatherSucceeded(peer="p1", data={"a": 1, "b": 2}, stimulus_id="g"))
    assert out == [Execute(key="z", stimulus_id="g")]
    h(ok("z"))
    # b was scattered here: kept; a was fetched: dropped.
    assert set(h.w.data) == {"b", "z"}


def test_free_of_data_a_local_task_still_needs_waits_until_it_is_used() -> None:
    h = Harness(nthreads=1)
    h(compute("a"))
    h(ok("a", 1))
    h(compute("block"))  # takes the only thread
    h(compute("b", {"a": (ME,)}))
    assert h.state("b") == "ready"
    h(FreeRequested(keys=("a",), stimulus_id="free-requested"))
    assert h.w.data == {"a": 1}
    h(ok("block"))
    h(ok("b"))
    assert "a" not in h.w.data
    assert "a" not in h.w.tasks


@pytest.mark.parametrize("kwargs", [{"nthreads": 0}, {"max_concurrent_gathers": 0}])
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        WorkerState(address=ME, **{"nthreads": 1, **kwargs})
