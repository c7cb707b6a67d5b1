"""Randomized (seeded, so deterministic) runs of whole computations through the core.

``test_random_graph_with_simulated_workers`` drives the scheduler alone and
answers each ComputeTask with TaskFinished, with workers dying and joining.
``test_random_graph_on_a_simulated_cluster`` wires the scheduler to real
``WorkerState`` machines, delivering messages in random order per link, so the
two state machines are checked against each other.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from core_checks import check_scheduler, check_worker

from trioclust.core.events import (
    AddClient,
    AddWorker,
    ComputeRequested,
    ExecuteSucceeded,
    FreeRequested,
    GatherFailed,
    GatherSucceeded,
    MissingData,
    NewTask,
    ReleaseKeys,
    RemoveWorker,
    RescheduleTask,
    SchedulerEvent,
    TaskFinished,
    UpdateGraph,
    WorkerEvent,
)
from trioclust.core.instructions import (
    CancelExecute,
    ComputeTask,
    Execute,
    FreeKeys,
    Gather,
    KeyErred,
    KeyInMemory,
    KeyLost,
    SchedulerInstruction,
    SendMissingData,
    SendReschedule,
    SendTaskErred,
    SendTaskFinished,
)
from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.worker_state import WorkerState


def random_graph(rng: random.Random, n: int) -> tuple[list[NewTask], tuple[str, ...]]:
    """A DAG of ``n`` tasks; wanted: every sink and a tenth of the rest."""
    tasks: list[NewTask] = []
    has_dependents: set[str] = set()
    for i in range(n):
        k = rng.choice((0, 0, 1, 1, 2, 3)) if i else 0
        deps = tuple(sorted({f"t{rng.randrange(max(0, i - 30), i)}" for _ in range(k)}))
        has_dependents.update(deps)
        tasks.append(NewTask(key=f"t{i}", run_spec=i, dependencies=deps, priority=i))
    wanted = tuple(t.key for t in tasks if t.key not in has_dependents or rng.random() < 0.1)
    return tasks, wanted


# ------------------------------------------------- scheduler + fake workers


@dataclass
class FakeWorker:
    running: set[str] = field(default_factory=set)
    data: set[str] = field(default_factory=set)


@pytest.mark.parametrize("saturation", [math.inf, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_graph_with_simulated_workers(seed: int, saturation: float) -> None:
    rng = random.Random(seed)
    tasks, wanted = random_graph(rng, 200)
    deps = {t.key: set(t.dependencies) for t in tasks}
    s = SchedulerState(allowed_failures=100, worker_saturation=saturation)
    workers: dict[str, FakeWorker] = {}
    told: dict[str, str] = {}
    names = iter(f"w{i}" for i in range(1000))

    def handle(event: SchedulerEvent) -> None:
        out = s.handle(event)
        check_scheduler(s)
        for i in out:
            consume(i)

    def consume(i: SchedulerInstruction) -> None:
        if isinstance(i, ComputeTask):
            w = workers[i.worker]
            assert i.key not in w.running
            assert i.key not in w.data
            assert set(i.who_has) == deps[i.key]
            for dep, holders in i.who_has.items():
                assert holders, (i, dep)
                assert all(dep in workers[h].data for h in holders), (i, dep)
            w.running.add(i.key)
        elif isinstance(i, FreeKeys):
            w = workers[i.worker]
            for key in i.keys:
                w.running.discard(key)
                w.data.discard(key)
        elif isinstance(i, KeyInMemory):
            assert i.key in wanted
            assert s.tasks[i.key].state == "memory"
            told[i.key] = "memory"
        elif isinstance(i, KeyLost):
            assert told.get(i.key) == "memory"
            told[i.key] = "lost"
        else:
            raise AssertionError(f"unexpected {i}")

    handle(AddClient(client="c", stimulus_id="add-client"))
    for _ in range(2):
        name = next(names)
        workers[name] = FakeWorker()
        handle(AddWorker(address=name, nthreads=2, stimulus_id=f"add-{name}"))
    handle(UpdateGraph(client="c", tasks=tuple(tasks), wanted=wanted, stimulus_id="graph"))
    dead: list[str] = []
    deaths = 0
    for _step in range(5000):
        running = sorted((w, k) for w, fw in workers.items() for k in fw.running)
        roll = rng.random()
        if roll < 0.02 and len(workers) == 2 and deaths < 8:
            victim = rng.choice(sorted(workers))
            del workers[victim]
            dead.append(victim)
            deaths += 1
            handle(RemoveWorker(address=victim, expected=rng.random() < 0.5, stimulus_id="remove-worker"))
        elif roll < 0.05 and len(workers) < 2:
            name = next(names)
            workers[name] = FakeWorker()
            handle(AddWorker(address=name, nthreads=rng.choice((1, 2)), stimulus_id=f"add-{name}"))
        elif roll < 0.06 and dead:
            handle(TaskFinished(worker=rng.choice(dead), key=rng.choice(tasks).key, stimulus_id="task-finished"))
        elif roll < 0.07 and running:
            w, key = rng.choice(running)
            workers[w].running.discard(key)
            handle(RescheduleTask(worker=w, key=key, stimulus_id="reschedule-task"))
        elif running:
            w, key = rng.choice(running)
            workers[w].running.discard(key)
            workers[w].data.add(key)
            handle(TaskFinished(worker=w, key=key, nbytes=rng.randrange(100), stimulus_id="task-finished"))
        elif not workers:
            name = next(names)
            workers[name] = FakeWorker()
            handle(AddWorker(address=name, nthreads=1, stimulus_id=f"add-{name}"))
        else:
            break
    assert {key: told.get(key) for key in wanted} == dict.fromkeys(wanted, "memory")
    assert all(s.tasks[key].state == "memory" for key in wanted)
    assert set(s.tasks_by_state()) <= {"memory", "released"}
    handle(ReleaseKeys(client="c", keys=wanted, stimulus_id="release-keys"))
    assert s.tasks == {}
    assert all(not w.data and not w.running for w in workers.values())
    assert all(not ws.has_what and not ws.processing for ws in s.workers.values())


# ------------------------------------------- scheduler + real worker states


class Cluster:
    """A scheduler and WorkerStates joined by FIFO links delivered in random order."""

    def __init__(self, rng: random.Random, deps: dict[str, set[str]]) -> None:
        self.rng = rng
        self.deps = deps
        self.s = SchedulerState(allowed_failures=100, worker_saturation=2.0)
        self.workers: dict[str, WorkerState] = {}
        self.to_worker: dict[str, deque[WorkerEvent]] = {}
        self.to_scheduler: dict[str, deque[SchedulerEvent]] = {}
        self.threads: dict[str, set[str]] = {}
        self.gathers: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        self.told: dict[str, str] = {}
        self.count = 0

    def add_worker(self) -> None:
        self.count += 1
        name = f"w{self.count}"
        self.workers[name] = WorkerState(address=name, nthreads=2, max_concurrent_gathers=2)
        self.to_worker[name] = deque()
        self.to_scheduler[name] = deque()
        self.threads[name] = set()
        self.gathers[name] = []
        self.scheduler(AddWorker(address=name, nthreads=2, stimulus_id=f"add-{name}"))

    def kill_worker(self, name: str) -> None:
        for table in (self.workers, self.to_worker, self.to_scheduler, self.threads, self.gathers):
            del table[name]
        self.scheduler(RemoveWorker(address=name, stimulus_id=f"kill-{name}"))

    def scheduler(self, event: SchedulerEvent) -> None:
        out = self.s.handle(event)
        check_scheduler(self.s)
        for i in out:
            if isinstance(i, ComputeTask):
                self.to_worker[i.worker].append(
                    ComputeRequested(
                        key=i.key,
                        run_spec=i.run_spec,
                        who_has=i.who_has,
                        nbytes=i.nbytes,
                        priority=i.priority,
                        stimulus_id=i.stimulus_id,
                    )
                )
            elif isinstance(i, FreeKeys):
                self.to_worker[i.worker].append(FreeRequested(keys=i.keys, stimulus_id=i.stimulus_id))
            elif isinstance(i, KeyInMemory):
                self.told[i.key] = "memory"
            elif isinstance(i, KeyLost):
                self.told[i.key] = "lost"
            else:
                assert not isinstance(i, KeyErred), i
                raise AssertionError(i)

    def worker(self, name: str, event: WorkerEvent) -> None:
        w = self.workers[name]
        out = w.handle(event)
        check_worker(w)
        for i in out:
            if isinstance(i, Execute):
                assert all(d in w.data for d in self.deps[i.key]), i
                self.threads[name].add(i.key)
            elif isinstance(i, Gather):
                self.gathers[name].append((i.peer, i.keys))
            elif isinstance(i, SendTaskFinished):
                self.to_scheduler[name].append(
                    TaskFinished(worker=name, key=i.key, nbytes=i.nbytes, stimulus_id=i.stimulus_id)
                )
            elif isinstance(i, SendMissingData):
                self.to_scheduler[name].append(
                    MissingData(
                        worker=name, key=i.key, errant_worker=i.errant_worker, stimulus_id=i.stimulus_id
                    )
                )
            elif isinstance(i, SendReschedule):
                self.to_scheduler[name].append(RescheduleTask(worker=name, key=i.key, stimulus_id=i.stimulus_id))
            else:
                assert isinstance(i, CancelExecute), i
                assert not isinstance(i, SendTaskErred)

    def step(self) -> bool:
        """Deliver one message or finish one piece of work; False when idle."""
        choices: list[tuple[str, str]] = []
        for name in self.workers:
            if self.to_worker[name]:
                choices.append(("to_worker", name))
            if self.to_scheduler[name]:
                choices.append(("to_scheduler", name))
            if self.threads[name]:
                choices.append(("thread", name))
            if self.gathers[name]:
                choices.append(("gather", name))
        if not choices:
            return False
        kind, name = self.rng.choice(choices)
        if kind == "to_worker":
            self.worker(name, self.to_worker[name].popleft())
        elif kind == "to_scheduler":
            self.scheduler(self.to_scheduler[name].popleft())
        elif kind == "thread":
            key = self.rng.choice(sorted(self.threads[name]))
            self.threads[name].discard(key)
            self.worker(name, ExecuteSucceeded(key=key, value=f"v-{key}", nbytes=10, stimulus_id=f"execute-{key}"))
        else:
            peer, keys = self.gathers[name].pop(self.rng.randrange(len(self.gathers[name])))
            source = self.workers.get(peer)
            if source is None:
                self.worker(name, GatherFailed(peer=peer, keys=keys, reason="dead", stimulus_id=f"gather-{peer}"))
            else:
                data = {k: source.data[k] for k in keys if k in source.data}
                self.worker(name, GatherSucceeded(peer=peer, data=data, stimulus_id=f"gather-{peer}"))
        return True


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_graph_on_a_simulated_cluster(seed: int) -> None:
    rng = random.Random(seed)
    tasks, wanted = random_graph(rng, 200)
    c = Cluster(rng, {t.key: set(t.dependencies) for t in tasks})
    for _ in range(3):
        c.add_worker()
    c.scheduler(AddClient(client="c", stimulus_id="add-client"))
    c.scheduler(UpdateGraph(client="c", tasks=tuple(tasks), wanted=wanted, stimulus_id="update-graph"))
    deaths = 0
    for _step in range(20_000):
        roll = rng.random()
        if roll < 0.003 and deaths < 4 and len(c.workers) >= 2:
            deaths += 1
            c.kill_worker(rng.choice(sorted(c.workers)))
        elif roll < 0.01 and len(c.workers) < 3:
            c.add_worker()
        elif not c.step():
            break
    else:
        raise AssertionError("the computation did not finish")
    assert {key: c.told.get(key) for key in wanted} == dict.fromkeys(wanted, "memory")
    for key in wanted:
        ts = c.s.tasks[key]
        assert ts.state == "memory"
        assert all(c.workers[h].data[key] == f"v-{key}" for h in ts.who_has)
    c.scheduler(ReleaseKeys(client="c", keys=wanted, stimulus_id="release-keys"))
    while c.step():
        pass
    assert c.s.tasks == {}
    for w in c.workers.values():
        assert w.data == {}
        assert w.tasks == {}, w.tasks
