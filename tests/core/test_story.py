"""Stories and validation: each state machine logs its transitions and, under
``validate``, refuses a transition its table lacks."""

from __future__ import annotations

import itertools
import pickle
from collections import deque

import pytest
from test_scheduler_state import Harness, done, graph, nt
from test_worker_state import Harness as WorkerHarness
from test_worker_state import compute, ok

from trioclust.core.events import AddWorker, ReleaseKeys, RemoveWorker, TaskStarted
from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.scheduler_transitions import SchedulerTransitions
from trioclust.core.story import InvalidTransition, entries_after
from trioclust.core.worker_state import WorkerState


def ticking_clock() -> itertools.count[float]:
    return itertools.count(1.0)


# ---------------------------------------------------------------- scheduler


def test_scheduler_story_records_each_transition_with_its_stimulus() -> None:
    clock = ticking_clock()
    h = Harness("w1", clock=lambda: next(clock))
    h(graph(nt("a"), nt("b", "a"), wanted=("b",)))  # handle() call 3: the clock reads 3.0
    h(done("w1", "a"))  # 4.0
    assert h.s.story("a") == [
        ("a", "released", "waiting", "g", 3.0),
        ("a", "waiting", "processing", "g", 3.0),
        ("a", "processing", "memory", "f", 4.0),
    ]
    h(done("w1", "b"))  # 5.0: a is not needed any more
    h(ReleaseKeys(client="c", keys=("b",), stimulus_id="bye"))  # 6.0
    assert h.s.story("a")[3:] == [
        ("a", "memory", "released", "f", 5.0),
        ("a", "released", "forgotten", "bye", 6.0),
    ]
    both = h.s.story("a", "b")
    assert len(both) == 5 + len(h.s.story("b"))
    assert set(both) == set(h.s.story("a")) | set(h.s.story("b"))
    assert both == sorted(both, key=lambda e: e[4])  # oldest first
    assert h.s.story("never-seen") == []


def test_scheduler_story_is_bounded() -> None:
    h = Harness("w1", transition_log_length=4)
    h(graph(*(nt(f"t{i}") for i in range(4))))
    assert len(h.s.transition_log) == 4
    # the four released -> waiting fell off; the four waiting -> processing stay
    for key in ("t0", "t1", "t2", "t3"):
        assert [e[:3] for e in h.s.story(key)] == [(key, "waiting", "processing")]


def test_scheduler_state_machines_validate_in_the_core_tests() -> None:
    assert Harness().s.validate
    assert not SchedulerState(validate=False).validate


def test_scheduler_refuses_a_transition_missing_from_its_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness("w1")
    h(graph(nt("a")))
    monkeypatch.delitem(SchedulerTransitions._TRANSITIONS, ("processing", "memory"))
    with pytest.raises(InvalidTransition) as info:
        h(done("w1", "a"))
    exc = info.value
    assert (exc.key, exc.start, exc.finish, exc.stimulus_id) == ("a", "processing", "memory", "f")
    assert exc.story == h.s.story("a")
    assert [e[:4] for e in exc.story] == [
        ("a", "released", "waiting", "g"),
        ("a", "waiting", "processing", "g"),
    ]
    message = str(exc)
    assert "'processing' -> 'memory'" in message
    assert "key 'a'" in message
    assert "stimulus 'f'" in message
    assert "('a', 'waiting', 'processing', 'g'," in message
    copy = pickle.loads(pickle.dumps(exc))
    assert str(copy) == message


def test_without_validation_a_missing_transition_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness("w1", validate=False)
    h(graph(nt("a")))
    monkeypatch.delitem(SchedulerTransitions._TRANSITIONS, ("processing", "memory"))
    assert h(done("w1", "a")) == []
    assert h.state("a") == "processing"


# ------------------------------------------------------------------- worker


def test_worker_story_records_each_transition_with_its_stimulus() -> None:
    clock = ticking_clock()
    h = WorkerHarness(clock=lambda: next(clock))
    h(compute("a"))  # 1.0
    h(ok("a"))  # 2.0
    assert h.w.story("a") == [
        ("a", "released", "ready", "compute-a", 1.0),
        ("a", "ready", "executing", "compute-a", 1.0),
        ("a", "executing", "memory", "done-a", 2.0),
    ]
    assert h.w.story("b") == []


def test_worker_story_is_bounded() -> None:
    h = WorkerHarness(nthreads=4, transition_log_length=3)
    for key in "abcd":
        h(compute(key))
    assert len(h.w.transition_log) == 3
    assert h.w.story("a") == []


def test_worker_refuses_a_transition_missing_from_its_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = WorkerHarness()
    assert h.w.validate
    h(compute("a"))
    monkeypatch.delitem(WorkerState._TRANSITIONS, ("executing", "memory"))
    with pytest.raises(InvalidTransition, match="'executing' -> 'memory'") as info:
        h(ok("a"))
    exc = info.value
    assert (exc.key, exc.stimulus_id) == ("a", "done-a")
    assert [e[:4] for e in exc.story] == [
        ("a", "released", "ready", "compute-a"),
        ("a", "ready", "executing", "compute-a"),
    ]
    assert "('a', 'ready', 'executing', 'compute-a'," in str(exc)


def test_worker_without_validation_drops_a_missing_transition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = WorkerState(address="tcp://me", nthreads=1, validate=False)
    w.handle(compute("a"))
    monkeypatch.delitem(WorkerState._TRANSITIONS, ("executing", "memory"))
    w.handle(ok("a"))
    assert w.tasks["a"].state == "executing"


# ------------------------------------------------ stale by design, validated


def test_a_ready_task_released_later_in_the_same_pass_is_not_placed() -> None:
    """q is rescheduled (ready again) before p's KilledWorker errs d, which
    leaves q unneeded: its place in the ready heap is skipped, not an error."""
    h = Harness("w1", allowed_failures=0, worker_saturation=8)
    h(graph(nt("p"), nt("q"), nt("d", "p", "q"), wanted=("d",)))
    h(AddWorker(address="w2", nthreads=1, stimulus_id="add-w2"))
    h(TaskStarted(worker="w1", key="p", stimulus_id="s"))
    out = h(RemoveWorker(address="w1", stimulus_id="dead"))
    assert [type(i).__name__ for i in out] == ["KeyErred"]
    assert {k: h.state(k) for k in "pqd"} == {"p": "erred", "q": "released", "d": "erred"}
    assert [e[2] for e in h.s.story("q")] == ["waiting", "processing", "waiting", "released"]


def test_a_lost_key_released_before_its_own_recommendation_is_skipped() -> None:
    """(released, released) is stale by design: the dead worker's task that
    erred released the lost key it needed before the lost keys' turn came."""
    h = Harness("w1", allowed_failures=0)
    h(graph(nt("lost"), nt("p", "lost"), wanted=("p",)))
    h(done("w1", "lost"))
    h(AddWorker(address="w2", nthreads=1, stimulus_id="add-w2"))
    h(TaskStarted(worker="w1", key="p", stimulus_id="s"))
    h(RemoveWorker(address="w1", stimulus_id="dead"))
    assert (h.state("lost"), h.state("p")) == ("released", "erred")
    assert h.s.story("lost")[-1][1:4] == ("memory", "released", "dead")


def test_entries_after_a_mark_are_what_was_appended_since() -> None:
    log: deque[tuple[str, str, str, str, float]] = deque(maxlen=3)
    assert entries_after(log, None) == []
    log.append(("a", "released", "waiting", "s1", 0.0))
    mark = log[-1]
    for key in "bcd":  # "a" falls out of the bounded log: everything left is new
        log.append((key, "released", "waiting", "s2", 1.0))
    assert [e[0] for e in entries_after(log, mark)] == ["b", "c", "d"]
    mark = log[-2]
    assert [e[0] for e in entries_after(log, mark)] == ["d"]
    assert entries_after(log, log[-1]) == []
