"""SchedulerState: feed events, compare the instructions with what a user would expect."""

from __future__ import annotations

import math

import pytest
from core_checks import check_scheduler

from trioclust.core.events import (
    AddClient,
    AddWorker,
    MissingData,
    NewTask,
    ReleaseKeys,
    RemoveClient,
    RemoveWorker,
    RescheduleTask,
    SchedulerEvent,
    TaskErred,
    TaskFinished,
    UpdateData,
    UpdateGraph,
    WantKeys,
)
from trioclust.core.instructions import (
    ComputeTask,
    FreeKeys,
    KeyErred,
    KeyInMemory,
    KeyLost,
    SchedulerInstruction,
)
from trioclust.core.scheduler_state import SchedulerState
from trioclust.errors import FutureCancelledError, KilledWorker, LostData


def nt(key: str, *deps: str, priority: int = 0) -> NewTask:
    return NewTask(key=key, run_spec=f"run-{key}", dependencies=deps, priority=priority)


def graph(*tasks: NewTask, wanted: tuple[str, ...] | None = None, client: str = "c") -> UpdateGraph:
    if wanted is None:
        wanted = tuple(t.key for t in tasks)
    return UpdateGraph(client=client, tasks=tasks, wanted=wanted, stimulus_id="g")


def compute(
    worker: str,
    key: str,
    who_has: dict[str, tuple[str, ...]] | None = None,
    nbytes: dict[str, int] | None = None,
    *,
    priority: int = 0,
    stim: str = "g",
) -> ComputeTask:
    return ComputeTask(
        worker=worker,
        key=key,
        run_spec=f"run-{key}",
        who_has=who_has or {},
        nbytes=nbytes or {},
        priority=priority,
        stimulus_id=stim,
    )


def done(worker: str, key: str, nbytes: int = 1, value: object = None) -> TaskFinished:
    return TaskFinished(
        worker=worker, key=key, nbytes=nbytes, type_name="int", value=value, stimulus_id="f"
    )


def in_memory(key: str, client: str = "c", value: object = None, stim: str = "f") -> KeyInMemory:
    return KeyInMemory(client=client, key=key, type_name="int", value=value, stimulus_id=stim)


def free(worker: str, key: str, stim: str) -> FreeKeys:
    return FreeKeys(worker=worker, keys=(key,), stimulus_id=stim)


def cancel(worker: str, key: str, stim: str) -> FreeKeys:
    return FreeKeys(worker=worker, keys=(key,), stimulus_id=stim, cancel=True)


class Harness:
    """A SchedulerState whose invariants are checked after every step."""

    def __init__(self, *workers: str, nthreads: int = 1, **kwargs: float) -> None:
        self.s = SchedulerState(**kwargs)  # type: ignore[arg-type]
        self(AddClient(client="c", stimulus_id="add-client"))
        for w in workers:
            self(AddWorker(address=w, nthreads=nthreads, stimulus_id=f"add-{w}"))

    def __call__(self, *events: SchedulerEvent) -> list[SchedulerInstruction]:
        out = self.s.handle(*events)
        check_scheduler(self.s)
        return out

    def state(self, key: str) -> str:
        ts = self.s.tasks.get(key)
        return "forgotten" if ts is None else ts.state


# ---------------------------------------------------------------- basics


def test_single_task_round_trip() -> None:
    h = Harness("w1")
    assert h(graph(nt("a"))) == [compute("w1", "a")]
    assert h.state("a") == "processing"
    assert h(done("w1", "a", nbytes=8, value=2)) == [in_memory("a", value=2)]
    ts = h.s.tasks["a"]
    assert (ts.state, ts.who_has, ts.nbytes, ts.type_name) == ("memory", {"w1"}, 8, "int")
    assert h.s.workers["w1"].has_what == {"a"}
    assert h.s.workers["w1"].nbytes_stored == 8
    assert h(ReleaseKeys(client="c", keys=("a",), stimulus_id="r")) == [free("w1", "a", "r")]
    assert h.s.tasks == {}
    assert h.s.workers["w1"].has_what == set()
    assert h.s.workers["w1"].nbytes_stored == 0
    assert ("a", "released", "forgotten", "r") in (e[:4] for e in h.s.transition_log)


def test_chain_runs_where_its_data_is() -> None:
    h = Harness("w1", "w2")
    out = h(
        graph(nt("a"), nt("z1"), nt("z2"), nt("b", "a"), nt("c", "b"), wanted=("c", "z1", "z2"))
    )
    assert out == [compute("w1", "a"), compute("w2", "z1"), compute("w1", "z2")]
    assert h(done("w2", "z1")) == [in_memory("z1")]
    # w2 is idle and w1 busy with z2, but b goes where a is.
    assert h(done("w1", "a", nbytes=100)) == [
        compute("w1", "b", {"a": ("w1",)}, {"a": 100}, stim="f")
    ]
    # a is dropped once b is done, but kept as lineage.
    assert h(done("w1", "b", nbytes=10)) == [
        free("w1", "a", "f"),
        compute("w1", "c", {"b": ("w1",)}, {"b": 10}, stim="f"),
    ]
    assert h.state("a") == "released"
    assert h(done("w1", "c")) == [in_memory("c"), free("w1", "b", "f")]
    assert h.s.tasks_by_state() == {"released": 2, "memory": 2, "processing": 1}
    assert h(ReleaseKeys(client="c", keys=("c", "z1", "z2"), stimulus_id="r")) == [
        cancel("w1", "z2", "r"),
        free("w2", "z1", "r"),
        free("w1", "c", "r"),
    ]
    assert h.s.tasks == {}


def test_locality_prefers_most_bytes() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("small"), nt("big"), nt("sum", "small", "big"), wanted=("sum",)))
    h(done("w1", "small", nbytes=10))
    assert h(done("w2", "big", nbytes=1000)) == [
        compute(
            "w2",
            "sum",
            {"small": ("w1",), "big": ("w2",)},
            {"small": 10, "big": 1000},
            stim="f",
        )
    ]


def test_independent_tasks_spread_evenly() -> None:
    h = Harness("w1", "w2", nthreads=2, worker_saturation=math.inf)
    out = h(graph(*(nt(f"t{i}", priority=i) for i in range(10))))
    assert [(i.worker, i.key) for i in out if isinstance(i, ComputeTask)] == [
        ("w1" if i % 2 == 0 else "w2", f"t{i}") for i in range(10)
    ]
    assert len(h.s.workers["w1"].processing) == len(h.s.workers["w2"].processing) == 5


def test_priority_orders_a_batch() -> None:
    h = Harness("w1", worker_saturation=math.inf)
    out = h(graph(nt("low", priority=5), nt("high", priority=-1), nt("mid", priority=2)))
    assert [i.key for i in out if isinstance(i, ComputeTask)] == ["high", "mid", "low"]
    assert [i.priority for i in out if isinstance(i, ComputeTask)] == [-1, 2, 5]


# ------------------------------------------------------------ saturation


def test_saturation_queues_root_tasks_by_priority() -> None:
    h = Harness("w1", nthreads=2, worker_saturation=1.0)
    out = h(graph(*(nt(f"t{i}", priority=10 - i) for i in range(5))))
    assert out == [compute("w1", "t4", priority=6), compute("w1", "t3", priority=7)]
    assert h.s.tasks_by_state() == {"processing": 2, "queued": 3}
    assert h(done("w1", "t4")) == [in_memory("t4"), compute("w1", "t2", priority=8, stim="f")]
    # A task with dependencies is never queued: it joins its data at once.
    out = h(UpdateGraph(client="c", tasks=(nt("dep", "t4"),), wanted=("dep",), stimulus_id="g2"))
    assert out == [compute("w1", "dep", {"t4": ("w1",)}, {"t4": 1}, stim="g2")]
    assert len(h.s.workers["w1"].processing) == 3


def test_saturation_inf_sends_everything() -> None:
    h = Harness("w1", nthreads=2, worker_saturation=float("inf"))
    out = h(graph(*(nt(f"t{i}") for i in range(50))))
    assert len(out) == 50
    assert h.s.tasks_by_state() == {"processing": 50}


def test_saturation_fractional_keeps_one_task_per_worker() -> None:
    h = Harness("w1", "w2", nthreads=1, worker_saturation=0.1)
    out = h(graph(*(nt(f"t{i}") for i in range(4))))
    assert out == [compute("w1", "t0"), compute("w2", "t1")]
    assert h(AddWorker(address="w3", nthreads=4, stimulus_id="add")) == [
        compute("w3", "t2", stim="add")
    ]


def test_no_worker_then_add_worker() -> None:
    h = Harness(worker_saturation=1.0)
    assert h(graph(nt("a", priority=1), nt("b", priority=0), nt("c", priority=2))) == []
    assert h.s.tasks_by_state() == {"no-worker": 3}
    out = h(AddWorker(address="w1", nthreads=2, stimulus_id="add"))
    assert out == [
        compute("w1", "b", stim="add"),
        compute("w1", "a", priority=1, stim="add"),
    ]
    assert h.s.tasks_by_state() == {"processing": 2, "queued": 1}
    assert h(AddWorker(address="w2", nthreads=1, stimulus_id="add2")) == [
        compute("w2", "c", priority=2, stim="add2")
    ]


def test_queued_tasks_survive_losing_every_worker() -> None:
    h = Harness("w1", worker_saturation=1.0)
    h(graph(nt("a"), nt("b")))
    assert h(RemoveWorker(address="w1", stimulus_id="rm")) == []
    assert h.s.tasks_by_state() == {"no-worker": 1, "queued": 1}
    out = h(AddWorker(address="w2", nthreads=2, stimulus_id="add"))
    assert sorted(i.key for i in out if isinstance(i, ComputeTask)) == ["a", "b"]


# ---------------------------------------------------------------- errors


def test_error_propagates_to_dependents_and_clients() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a"), nt("d"), nt("b", "a"), nt("c", "b"), wanted=("b", "c", "d")))
    exc = ZeroDivisionError("boom")
    out = h(
        TaskErred(
            worker="w1",
            key="a",
            exception=exc,
            traceback="tb",
            exception_text="boom",
            stimulus_id="e",
        )
    )

    def erred(key: str, client: str = "c", stim: str = "e") -> KeyErred:
        return KeyErred(
            client=client,
            key=key,
            exception=exc,
            traceback="tb",
            exception_text="boom",
            stimulus_id=stim,
        )

    assert out == [free("w1", "a", "e"), erred("b"), erred("c")]
    for key in "abc":
        ts = h.s.tasks[key]
        assert (ts.state, ts.exception, ts.exception_blame) == ("erred", exc, "a")
    # the independent task is unaffected
    assert h(done("w2", "d")) == [in_memory("d")]
    # Asking again answers at once.
    assert h(WantKeys(client="c2", keys=("c",), stimulus_id="w")) == [erred("c", "c2", "w")]
    h(ReleaseKeys(client="c2", keys=("c",), stimulus_id="release-keys"))
    assert h(ReleaseKeys(client="c", keys=("b", "c", "d"), stimulus_id="r")) == [
        free("w2", "d", "r")
    ]
    assert h.s.tasks == {}


def test_unknown_dependency_errs_the_task() -> None:
    h = Harness("w1")
    out = h(graph(nt("b", "gone"), nt("c", "b"), wanted=("c",)))
    assert len(out) == 1
    assert isinstance(out[0], KeyErred)
    assert out[0].key == "c"
    assert isinstance(out[0].exception, ValueError)
    assert "'gone'" in out[0].exception_text
    assert "'b'" in out[0].exception_text
    assert h.s.tasks["c"].exception_blame == "b"
    h(ReleaseKeys(client="c", keys=("c",), stimulus_id="release-keys"))
    assert h.s.tasks == {}


def test_dependency_cycle_errs_instead_of_hanging() -> None:
    h = Harness("w1")
    out = h(
        graph(
            nt("a", "b"),
            nt("b", "a"),
            nt("c", "a"),
            nt("self", "self"),
            nt("ok"),
            wanted=("c", "self", "ok"),
        )
    )
    c_erred, self_erred, ok = out
    assert isinstance(c_erred, KeyErred)
    assert c_erred.key == "c"
    assert c_erred.exception_text == "'c' is part of, or depends on, a dependency cycle"
    assert isinstance(self_erred, KeyErred)
    assert self_erred.exception_text == "'self' depends on itself"
    assert ok == compute("w1", "ok")
    h(ReleaseKeys(client="c", keys=("c", "self"), stimulus_id="release-keys"))
    assert set(h.s.tasks) == {"ok"}


def test_resubmitting_a_finished_key_answers_again() -> None:
    h = Harness("w1")
    h(graph(nt("a"), nt("bad")))
    h(done("w1", "a", value=1))
    h(TaskErred(worker="w1", key="bad", exception="E", exception_text="E", stimulus_id="task-erred"))
    out = h(
        UpdateGraph(
            client="c2", tasks=(nt("a"), nt("bad")), wanted=("a", "bad"), stimulus_id="again"
        )
    )
    # The inline value is not kept: the client fetches the data from the workers.
    assert out == [
        in_memory("a", client="c2", stim="again"),
        KeyErred(client="c2", key="bad", exception="E", exception_text="E", stimulus_id="again"),
    ]
    assert h.s.tasks["a"].who_wants == {"c", "c2"}


def test_want_keys_unknown_key_errs() -> None:
    h = Harness("w1")
    (out,) = h(WantKeys(client="c", keys=("nope",), stimulus_id="w"))
    assert isinstance(out, KeyErred)
    assert isinstance(out.exception, FutureCancelledError)  # as Dask's cancelled keys
    assert not h.s.wants("c", "nope")


def test_wants_is_true_until_the_client_releases_the_key() -> None:
    h = Harness("w1")
    h(graph(nt("a"), wanted=("a",)))
    assert h.s.wants("c", "a")
    assert not h.s.wants("other", "a")
    h(ReleaseKeys(client="c", keys=("a",), stimulus_id="r"))
    assert not h.s.wants("c", "a")


# --------------------------------------------------------------- release


def test_release_cancels_and_forgets_everything() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a"), nt("b"), nt("c", "a"), nt("d", "c"), wanted=("b", "d")))
    h(done("w1", "a", nbytes=3))
    assert h.state("c") == "processing"
    assert h(ReleaseKeys(client="c", keys=("b", "d"), stimulus_id="r")) == [
        cancel("w1", "c", "r"),  # d was only waiting: nothing to tell
        free("w1", "a", "r"),  # drop a's data, needed by c only
        cancel("w2", "b", "r"),
    ]
    assert h.s.tasks == {}
    assert h.s.tasks_by_state() == {}
    assert all(not ws.processing and not ws.has_what for ws in h.s.workers.values())
    # The cancelled task's result arrives anyway: the worker is told to drop it.
    assert h(done("w1", "c")) == [free("w1", "c", "f")]


def test_unwanted_tasks_of_a_graph_are_culled() -> None:
    h = Harness("w1")
    out = h(graph(nt("a"), nt("b", "a"), nt("unused"), nt("unused2", "unused"), wanted=("b",)))
    assert out == [compute("w1", "a")]
    assert set(h.s.tasks) == {"a", "b"}


def test_two_clients_want_the_same_key() -> None:
    h = Harness("w1")
    h(graph(nt("a"), client="c"))
    assert h(graph(nt("a"), client="c2")) == []
    assert h(done("w1", "a")) == [in_memory("a", client="c"), in_memory("a", client="c2")]
    assert h(ReleaseKeys(client="c", keys=("a",), stimulus_id="release-keys")) == []
    assert h.state("a") == "memory"
    assert h(RemoveClient(client="c2", stimulus_id="bye")) == [free("w1", "a", "bye")]
    assert h.s.tasks == {}
    assert h.s.clients == {"c"}


def test_released_dependency_recomputed_when_dependent_is_lost() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a"), nt("b", "a"), wanted=("b",)))
    h(done("w1", "a", nbytes=5))
    assert h(done("w1", "b", nbytes=7)) == [in_memory("b"), free("w1", "a", "f")]
    assert h.state("a") == "released"
    assert h(RemoveWorker(address="w1", stimulus_id="rm")) == [
        KeyLost(client="c", key="b", stimulus_id="rm"),
        compute("w2", "a", stim="rm"),
    ]
    assert h.s.tasks_by_state() == {"waiting": 1, "processing": 1}
    assert h(done("w2", "a", nbytes=5)) == [compute("w2", "b", {"a": ("w2",)}, {"a": 5}, stim="f")]
    assert h(done("w2", "b", nbytes=7)) == [in_memory("b"), free("w2", "a", "f")]


def test_lost_memory_keys_are_recomputed() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("x"), nt("y")))
    h(done("w1", "x"), done("w2", "y"))
    assert h(RemoveWorker(address="w1", stimulus_id="rm")) == [
        KeyLost(client="c", key="x", stimulus_id="rm"),
        compute("w2", "x", stim="rm"),
    ]
    assert h.state("y") == "memory"


def test_dependent_processing_elsewhere_is_cancelled_when_data_is_lost() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a"), nt("a2"), nt("b", "a", "a2"), wanted=("b",)))
    h(done("w1", "a", nbytes=10))
    assert h(done("w2", "a2", nbytes=100)) == [
        compute("w2", "b", {"a": ("w1",), "a2": ("w2",)}, {"a": 10, "a2": 100}, stim="f")
    ]
    out = h(RemoveWorker(address="w1", stimulus_id="rm"))
    assert out == [cancel("w2", "b", "rm"), compute("w2", "a", stim="rm")]
    assert h.state("b") == "waiting"
    assert h.s.tasks["b"].suspicious == 0


def test_missing_data_recomputes_and_stale_reschedule_is_ignored() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a"), nt("a2"), nt("b", "a", "a2"), wanted=("b",)))
    h(done("w1", "a", nbytes=10), done("w2", "a2", nbytes=100))
    assert h.state("b") == "processing"
    out = h(MissingData(worker="w2", key="a", errant_worker="w1", stimulus_id="m"))
    assert out == [cancel("w2", "b", "m"), compute("w1", "a", stim="m")]
    assert h.s.workers["w1"].has_what == {"a"} - {"a"}
    # The worker also gave b back; b is no longer processing there.
    assert h(RescheduleTask(worker="w2", key="b", stimulus_id="rs")) == []
    h(done("w1", "a", nbytes=10))
    assert h.state("b") == "processing"


def test_missing_data_with_another_holder_only_forgets_the_copy() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a")))
    h(done("w1", "a"), done("w2", "a"))  # the second is a valid extra copy
    assert h.s.tasks["a"].who_has == {"w1", "w2"}
    assert h(MissingData(worker="w2", key="a", errant_worker="w1", stimulus_id="missing-data")) == []
    assert h.s.tasks["a"].who_has == {"w2"}
    assert h.s.workers["w1"].has_what == set()


def test_reschedule_task() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a")))
    assert h(RescheduleTask(worker="w2", key="a", stimulus_id="x")) == []  # not there
    out = h(RescheduleTask(worker="w1", key="a", stimulus_id="rs"))
    assert out == [compute("w2", "a", stim="rs")]
    assert h.s.tasks["a"].suspicious == 0


def test_scattered_data_lost_errs_with_lost_data() -> None:
    h = Harness("w1", "w2")
    out = h(UpdateData(client="c", who_has={"x": ("w1",)}, nbytes={"x": 5}, stimulus_id="sc"))
    assert out == [KeyInMemory(client="c", key="x", stimulus_id="sc")]
    assert h.s.workers["w1"].nbytes_stored == 5
    assert h(graph(nt("y", "x"), wanted=("y",))) == [compute("w1", "y", {"x": ("w1",)}, {"x": 5})]
    out = h(RemoveWorker(address="w1", stimulus_id="rm"))
    # y was running on w1 and cannot run anywhere without x.
    assert [type(i) for i in out] == [KeyErred, KeyErred]
    for erred, key in zip(out, "xy", strict=True):
        assert isinstance(erred, KeyErred)
        assert erred.key == key
        assert isinstance(erred.exception, LostData)
        assert erred.exception_text == str(LostData("x"))
    assert h.state("y") == "erred"
    assert h.s.tasks["y"].exception_blame == "x"


def test_update_data_of_a_key_being_computed_keeps_the_computation() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a")))
    assert h(UpdateData(client="c2", who_has={"a": ("w2",)}, stimulus_id="sc")) == [
        free("w2", "a", "sc")
    ]
    assert h(done("w1", "a")) == [in_memory("a"), in_memory("a", client="c2")]


# ------------------------------------------------------------ worker death


def test_worker_death_reschedules_and_then_kills_the_task() -> None:
    h = Harness("w1", "w2", allowed_failures=3)
    h(graph(nt("x"), nt("y")))
    assert h.s.tasks["x"].processing_on is h.s.workers["w1"]
    victim = "w1"
    for death in range(1, 5):
        spare = f"spare{death}"
        h(AddWorker(address=spare, nthreads=1, stimulus_id="add"))
        out = h(RemoveWorker(address=victim, reason="segfault", stimulus_id=f"rm{death}"))
        assert h.s.tasks["x"].suspicious == death
        if death <= 3:
            assert out == [compute(spare, "x", stim=f"rm{death}")]
            victim = spare
    (erred,) = out
    assert isinstance(erred, KeyErred)
    assert erred.key == "x"
    exc = erred.exception
    assert isinstance(exc, KilledWorker)
    assert (exc.key, exc.last_worker, exc.allowed_failures) == ("x", "spare3", 3)
    assert erred.traceback is None
    assert erred.exception_text == str(exc)
    assert "4 workers that died" in erred.exception_text
    # y was running on w2 all along
    assert h.s.tasks["y"].suspicious == 0
    assert h(done("w2", "y")) == [in_memory("y")]


def test_expected_departure_does_not_count() -> None:
    h = Harness("w1", "w2", allowed_failures=0)
    h(graph(nt("x")))
    assert h(RemoveWorker(address="w1", expected=True, stimulus_id="bye")) == [
        compute("w2", "x", stim="bye")
    ]
    assert h.s.tasks["x"].suspicious == 0


def test_stale_task_finished_from_removed_worker() -> None:
    h = Harness("w1", "w2")
    h(graph(nt("a")))
    h(RemoveWorker(address="w1", stimulus_id="remove-worker"))
    assert h(done("w1", "a")) == []
    assert h.state("a") == "processing"
    assert h(done("w2", "a")) == [in_memory("a")]
    # A result nobody asked that worker for: drop it.
    assert h(done("w2", "never-submitted")) == [free("w2", "never-submitted", "f")]


def test_reregistering_worker_counts_as_a_departure() -> None:
    h = Harness("w1")
    h(graph(nt("a"), nt("b")))
    h(done("w1", "a"))
    out = h(AddWorker(address="w1", nthreads=1, stimulus_id="again"))
    assert out == [
        KeyLost(client="c", key="a", stimulus_id="again"),
        compute("w1", "a", stim="again"),
        compute("w1", "b", stim="again"),
    ]
    assert h.s.tasks["b"].suspicious == 1


def test_transition_log_is_bounded() -> None:
    h = Harness("w1", transition_log_length=5)
    h(graph(*(nt(f"t{i}") for i in range(10))))
    assert len(h.s.transition_log) == 5


@pytest.mark.parametrize("kwargs", [{"allowed_failures": -1}, {"worker_saturation": 0.0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SchedulerState(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- retirement


def test_replicas_survive_the_retirement_of_the_original_holder() -> None:
    from trioclust.core.events import AddReplicas

    h = Harness("w1", "w2")
    h(graph(nt("a")))
    h(done("w1", "a", nbytes=8))
    # w2 fetched a copy of "a" before w1 retires; "gone" was never a task
    assert h(AddReplicas(worker="w2", keys=("a", "gone"), stimulus_id="rep")) == [
        free("w2", "gone", "rep")
    ]
    assert h.s.tasks["a"].who_has == {"w1", "w2"}
    assert h(RemoveWorker(address="w1", expected=True, stimulus_id="retire")) == []
    assert h.s.tasks["a"].who_has == {"w2"}
    assert h.state("a") == "memory"
    assert h.s.workers["w2"].nbytes_stored == 8


def test_only_started_tasks_are_blamed_for_a_worker_death() -> None:
    from trioclust.core.events import TaskStarted

    h = Harness("w1", worker_saturation=8)
    h(graph(nt("a"), nt("b"), nt("c")))
    assert {h.state(k) for k in "abc"} == {"processing"}
    h(TaskStarted(worker="w1", key="a", stimulus_id="s"))
    h(RemoveWorker(address="w1", stimulus_id="dead"))
    assert [h.s.tasks[k].suspicious for k in "abc"] == [1, 0, 0]
    # no start reported before the next death: every task it held counts
    h(AddWorker(address="w2", nthreads=1, stimulus_id="add-w2"))
    h(RemoveWorker(address="w2", stimulus_id="dead-again"))
    assert [h.s.tasks[k].suspicious for k in "abc"] == [2, 1, 1]


def test_a_worker_death_counts_against_its_started_task_not_its_queued_one() -> None:
    """A task handed to a worker that never reported starting it (still waiting
    there for a thread) cannot have killed the worker: only the started one is
    blamed, dies out with KilledWorker, and the queued one runs elsewhere."""
    from trioclust.core.events import TaskStarted

    h = Harness("w0", allowed_failures=2, worker_saturation=8)
    h(graph(nt("started"), nt("queued")))
    for death in range(3):
        worker = f"w{death}"
        assert {h.s.tasks[k].processing_on.address for k in ("started", "queued")} == {worker}  # type: ignore[union-attr]
        h(TaskStarted(worker=worker, key="started", stimulus_id=f"start-{death}"))
        h(AddWorker(address=f"w{death + 1}", nthreads=1, stimulus_id=f"add-{death + 1}"))
        out = h(RemoveWorker(address=worker, stimulus_id=f"dead-{death}"))
        assert h.s.tasks["queued"].suspicious == 0
    assert h.state("started") == "erred"
    exc = h.s.tasks["started"].exception
    assert isinstance(exc, KilledWorker)
    assert (exc.key, exc.last_worker, exc.allowed_failures) == ("started", "w2", 2)
    assert out == [
        KeyErred(
            client="c",
            key="started",
            exception=exc,
            exception_text=str(exc),
            stimulus_id="dead-2",
        ),
        compute("w3", "queued", stim="dead-2"),
    ]
    assert h(done("w3", "queued")) == [in_memory("queued")]


def test_a_task_that_always_kills_its_worker_errs_without_harming_others() -> None:
    from trioclust.core.events import TaskStarted

    h = Harness("w0", worker_saturation=8)
    h(graph(nt("bad"), nt("good")))
    for i in range(4):
        h(TaskStarted(worker=f"w{i}", key="bad", stimulus_id="s"))
        out = h(RemoveWorker(address=f"w{i}", stimulus_id=f"dead-{i}"))
        if i < 3:
            h(AddWorker(address=f"w{i + 1}", nthreads=1, stimulus_id="add"))
    assert h.state("bad") == "erred"
    assert isinstance(h.s.tasks["bad"].exception, KilledWorker)
    assert any(isinstance(i, KeyErred) and i.key == "bad" for i in out)
    assert h.s.tasks["good"].suspicious == 0


def test_pending_tasks_share_their_small_sets() -> None:
    """A map over one slow future: 1,000 tasks hold one set per kind, not 1,000."""
    from trioclust.core.scheduler_tasks import EMPTY, SMALL_SET

    h = Harness("w1")
    h(graph(nt("slow")))
    h(graph(*(nt(f"t{i}", "slow") for i in range(1000))))
    first, last = h.s.tasks["t0"], h.s.tasks["t999"]
    assert first.waiting_on == {h.s.tasks["slow"]}
    assert first.waiting_on is last.waiting_on
    assert first.who_wants == {"c"}
    assert first.who_wants is last.who_wants
    assert first.dependencies is last.dependencies
    assert first.waiters is EMPTY
    assert first.who_has is EMPTY
    # a set that outgrows the small ones is an ordinary set, changed in place
    waiters = h.s.tasks["slow"].waiters
    assert type(waiters) is set
    assert len(waiters) == 1000 > SMALL_SET
    h(ReleaseKeys(client="c", keys=tuple(f"t{i}" for i in range(1000)), stimulus_id="r"))
    assert h.s.tasks["slow"].waiters == set()
    assert list(h.s.tasks) == ["slow"]
