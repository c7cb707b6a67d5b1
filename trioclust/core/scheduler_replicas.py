"""Where copies of results should go: ``client.replicate`` and ``client.rebalance``.

Pure planning over the scheduler's view of who holds what; the scheduler
state turns a plan into instructions (see "Replicating and rebalancing" in
scheduler_state.py).

* Replicate: each key gets ``n`` holders among the ``pool`` of workers
  (default: every pool worker). Missing copies go to the pool workers that
  hold the fewest bytes, each fetched from one of the key's holders
  (round-robin); extra copies are dropped from the pool workers holding the
  most bytes, never the last copy.
* Rebalance: the bytes of the chosen keys held by each pool worker are
  evened out. Repeatedly, the most loaded worker sends the largest key it can
  to the least loaded one that lacks it, as long as the move narrows their
  gap (the receiver ends below where the sender was); each key moves at most
  once. A size of 0 counts as 1, so keys of unknown size spread by count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trioclust.core.keys import Key
from trioclust.core.scheduler_tasks import TaskState, WorkerInfo

__all__ = ["ReplicaPlan", "plan_rebalance", "plan_replicate"]


@dataclass(slots=True)
class ReplicaPlan:
    """Copies to make (``{target: {key: (source,)}}``) and copies to drop
    (``{worker: [key, ...]}``); ``moves`` names, for a rebalance, the
    holder each copied key leaves once its copy is made (``{(key, target): source}``)."""

    copies: dict[str, dict[Key, tuple[str, ...]]] = field(default_factory=dict)
    drops: dict[str, list[Key]] = field(default_factory=dict)
    moves: dict[tuple[Key, str], str] = field(default_factory=dict)


def _size(ts: TaskState) -> int:
    return max(ts.nbytes, 1)


def plan_replicate(
    tasks: Mapping[Key, TaskState], workers: Mapping[str, WorkerInfo], keys: Iterable[Key],
    n: int | None, pool: Iterable[str] | None,
) -> ReplicaPlan:
    """The copies that give each of ``keys`` (in memory) ``n`` holders in ``pool``."""
    members = [w for w in (pool if pool is not None else workers) if w in workers]
    want = len(members) if n is None else max(1, min(n, len(members)))
    load = {w: workers[w].nbytes_stored for w in members}
    plan = ReplicaPlan()
    for i, key in enumerate(dict.fromkeys(keys)):
        ts = tasks.get(key)
        if ts is None or ts.state != "memory" or not ts.who_has:
            continue
        holders = sorted(w for w in members if w in ts.who_has)
        if len(holders) < want:
            sources = sorted(ts.who_has)
            free = sorted((w for w in members if w not in ts.who_has), key=lambda w: (load[w], w))
            for target in free[: want - len(holders)]:
                plan.copies.setdefault(target, {})[key] = (sources[i % len(sources)],)
                load[target] += _size(ts)
        elif len(holders) > want:
            by_load = sorted(holders, key=lambda w: (-load[w], w))
            for worker in by_load[: len(holders) - want]:
                plan.drops.setdefault(worker, []).append(key)
                load[worker] -= _size(ts)
    return plan


def plan_rebalance(
    tasks: Mapping[Key, TaskState], workers: Mapping[str, WorkerInfo], keys: Iterable[Key] | None,
    pool: Iterable[str] | None,
) -> ReplicaPlan:
    """Moves that even out the bytes of ``keys`` (all in memory when None) over ``pool``."""
    members = sorted(w for w in (pool if pool is not None else workers) if w in workers)
    plan = ReplicaPlan()
    if len(members) < 2:
        return plan
    chosen = set(keys) if keys is not None else None
    held: dict[str, list[TaskState]] = {}
    load: dict[str, int] = {}
    for w in members:
        mine = [
            tasks[k] for k in workers[w].has_what
            if (chosen is None or k in chosen) and tasks[k].state == "memory"
        ]
        held[w] = sorted(mine, key=lambda ts: (-_size(ts), ts.key))
        load[w] = sum(_size(ts) for ts in mine)
    moved: set[Key] = set()
    while True:
        sender = max(members, key=lambda w: (load[w], w))
        best = None
        for ts in held[sender]:
            if ts.key in moved:
                continue
            lacking = [w for w in members if w != sender and w not in ts.who_has]
            if not lacking:
                continue
            receiver = min(lacking, key=lambda w: (load[w], w))
            if load[receiver] + _size(ts) < load[sender]:
                best = (ts, receiver)
                break
        if best is None:
            return plan
        ts, receiver = best
        moved.add(ts.key)
        plan.copies.setdefault(receiver, {})[ts.key] = (sender,)
        plan.moves[(ts.key, receiver)] = sender
        held[sender].remove(ts)
        load[sender] -= _size(ts)
        load[receiver] += _size(ts)
