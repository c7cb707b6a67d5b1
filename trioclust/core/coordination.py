"""Cluster-side coordination state: variables, queues, semaphores (and locks),
events, multi-locks and published datasets, as one sans-IO state machine.

Theory of operation
===================

``CoordinationState.handle(*events)`` applies requests that clients (and the
tasks' clients on workers) sent to the scheduler and returns instructions:
``Reply`` answers one waiting request, ``HoldKeys`` / ``DropKeys`` tell the
scheduler's task state to keep (or stop keeping) the keys of futures stored
here, on behalf of the pseudo-client :data:`HOLDER`. Nothing here blocks or
reads a clock: a request that cannot be answered yet (a ``get`` of an unset
variable or an empty queue, an ``acquire`` of a taken lease, an event's
``wait``) keeps its ``waiter`` (an id the runtime chose) until something
answers it, or until the runtime gives up on it (``CancelWait``, on a
timeout), which answers it with ``TIMED_OUT``. The runtime therefore never
hangs on a request: it waits for its Reply at most the caller's timeout.

Values are opaque (the runtime passes serialized bytes through); a stored
future is its key (``Item.keys``: those in the value), held here so that the data outlives the
client that stored it, as in Dask.

Leases: every lease of a semaphore (a lock is a semaphore of one lease, as
in Dask) and every multi-lock belongs to the client that took it; when that
client goes (``ClientGone``: it closed, or its process died, a worker's
tasks' client with its worker), its leases are released and its waiters
dropped. A release of a lease that is not held answers ``NOT_HELD``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "HOLDER",
    "NOT_HELD",
    "TIMED_OUT",
    "CancelWait",
    "ClientGone",
    "CoordinationState",
    "DropKeys",
    "EventClear",
    "EventSet",
    "EventWait",
    "HoldKeys",
    "Item",
    "MultiLockAcquire",
    "MultiLockRelease",
    "PublishDataset",
    "QueueGet",
    "QueuePut",
    "Reply",
    "SemaphoreAcquire",
    "SemaphoreCreate",
    "SemaphoreRelease",
    "UnpublishDataset",
    "VariableDelete",
    "VariableGet",
    "VariableSet",
]

#: The pseudo-client that wants the keys of stored futures.
HOLDER = "coordination"
#: Reply status of a request given up on (CancelWait).
TIMED_OUT = "timed-out"
#: Reply status of a release of a lease not held.
NOT_HELD = "not-held"


@dataclass(frozen=True, slots=True)
class Item:
    """A stored value: opaque ``value``, and the keys of the futures in it."""

    value: object = None
    keys: tuple[str, ...] = ()


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True, kw_only=True)
class VariableSet:
    name: str
    item: Item
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VariableGet:
    """Answered with the variable's Item once it is set."""

    name: str
    client: str
    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VariableDelete:
    name: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuePut:
    """Answered None once the item is in the queue: at once, or when a
    bounded queue has room (``waiter`` empty: nobody waits for the answer).
    ``maxsize`` bounds the queue if this request is the first to name it."""

    name: str
    item: Item
    client: str = ""
    waiter: str = ""
    maxsize: int = 0
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueGet:
    """Answered with a list of Items: one (waiting for it), or with ``batch``
    every item there, or ``n`` of them (taken as they come, waiting until
    there are ``n``). ``maxsize`` as for QueuePut."""

    name: str
    client: str
    waiter: str
    batch: bool = False
    n: int | None = None
    maxsize: int = 0
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SemaphoreCreate:
    name: str
    max_leases: int
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SemaphoreAcquire:
    """Answered True once ``lease`` is granted."""

    name: str
    lease: str
    client: str
    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SemaphoreRelease:
    """Answered None, or with status NOT_HELD."""

    name: str
    lease: str
    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSet:
    name: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EventClear:
    name: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EventWait:
    """Answered True once the event is set."""

    name: str
    client: str
    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiLockAcquire:
    """Answered True once ``num_locks`` of ``names`` (all of them if None)
    are free and taken for ``lease``."""

    names: tuple[str, ...]
    num_locks: int | None
    lease: str
    client: str
    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiLockRelease:
    """Answered None, or with status NOT_HELD."""

    lease: str
    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishDataset:
    """Answered None, or with status ``"exists"`` naming the taken names."""

    items: dict[str, Item]
    override: bool
    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnpublishDataset:
    name: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWait:
    """The runtime gives up on ``waiter`` (its timeout passed)."""

    waiter: str
    stimulus_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientGone:
    """``client`` disconnected: its leases go, its waiters are dropped."""

    client: str
    stimulus_id: str


CoordinationEvent = (
    VariableSet | VariableGet | VariableDelete | QueuePut | QueueGet | SemaphoreCreate
    | SemaphoreAcquire | SemaphoreRelease | EventSet | EventClear | EventWait
    | MultiLockAcquire | MultiLockRelease | PublishDataset | UnpublishDataset | CancelWait
    | ClientGone
)


# ------------------------------------------------------------ instructions


@dataclass(slots=True, kw_only=True)
class Reply:
    """Answer the request ``waiter``: ``status`` "OK" with ``value``, or an
    other status (TIMED_OUT, NOT_HELD, "exists")."""

    waiter: str
    value: object = None
    status: str = "OK"
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class HoldKeys:
    """Want these keys for :data:`HOLDER` (a stored future's data must stay)."""

    keys: tuple[str, ...]
    stimulus_id: str = ""


@dataclass(slots=True, kw_only=True)
class DropKeys:
    """Release these keys for :data:`HOLDER`: nothing stored refers to them now."""

    keys: tuple[str, ...]
    stimulus_id: str = ""


CoordinationInstruction = Reply | HoldKeys | DropKeys


@dataclass(slots=True)
class _Semaphore:
    max_leases: int
    leases: dict[str, str] = field(default_factory=dict)  # lease -> client
    waiting: deque[tuple[str, str, str]] = field(default_factory=deque)  # (waiter, lease, client)


@dataclass(slots=True)
class _QueueWaiter:
    waiter: str
    client: str
    batch: bool
    n: int | None
    taken: list[Item] = field(default_factory=list)  # items a get of n holds so far


@dataclass(slots=True)
class _Queue:
    """A queue's items, oldest first; the gets waiting for items and the
    puts waiting for room (a bounded queue's), first come first served."""

    maxsize: int = 0  # 0: unbounded
    items: deque[Item] = field(default_factory=deque)
    getters: deque[_QueueWaiter] = field(default_factory=deque)
    putters: deque[tuple[str, str, Item]] = field(default_factory=deque)  # (waiter, client, item)


class CoordinationState:
    """Variables, queues, semaphores, events, multi-locks and datasets.

    Attributes:
        variables: Each set variable's Item, by name.
        queues: Each queue (made by the first request that names it, with
            that request's ``maxsize``): its items, waiting gets and puts.
        semaphores: Each semaphore's leases and waiters.
        events: Names of the events that are set.
        datasets: Each published dataset's Item, by name.
    """

    def __init__(self) -> None:
        self.variables: dict[str, Item] = {}
        self.queues: dict[str, _Queue] = {}
        self.semaphores: dict[str, _Semaphore] = {}
        self.events: set[str] = set()
        self.datasets: dict[str, Item] = {}
        self._multilocks: dict[str, str] = {}  # lock name -> lease
        self._multileases: dict[str, tuple[tuple[str, ...], str]] = {}  # lease -> (names, client)
        self._multiwaiting: deque[MultiLockAcquire] = deque()
        self._variable_waiters: dict[str, list[tuple[str, str]]] = {}  # name -> (waiter, client)
        self._event_waiters: dict[str, list[tuple[str, str]]] = {}
        self._held: Counter[str] = Counter()
        self._out: list[CoordinationInstruction] = []

    # ------------------------------------------------------------ queries
    def qsize(self, name: str) -> int:
        """How many items queue ``name`` holds."""
        queue = self.queues.get(name)
        return 0 if queue is None else len(queue.items)

    def semaphore_value(self, name: str) -> int:
        """How many leases of semaphore ``name`` are taken."""
        sem = self.semaphores.get(name)
        return 0 if sem is None else len(sem.leases)

    def is_set(self, name: str) -> bool:
        """Whether event ``name`` is set."""
        return name in self.events

    # --------------------------------------------------------- the machine
    def handle(self, *events: CoordinationEvent) -> list[CoordinationInstruction]:
        """Apply events in order; the instructions they lead to."""
        out: list[CoordinationInstruction] = []
        self._out = out
        for event in events:
            self._dispatch(event)
        self._out = []
        return out

    def _dispatch(self, event: CoordinationEvent) -> None:
        stim = event.stimulus_id
        match event:
            case VariableSet():
                old = self.variables.get(event.name)
                self._hold(event.item, stim)
                self.variables[event.name] = event.item
                for waiter, _ in self._variable_waiters.pop(event.name, []):
                    self._reply(waiter, event.item, stim)
                if old is not None:
                    self._drop(old, stim)
            case VariableGet():
                item = self.variables.get(event.name)
                if item is not None:
                    self._reply(event.waiter, item, stim)
                else:
                    self._variable_waiters.setdefault(event.name, []).append((event.waiter, event.client))
            case VariableDelete():
                old = self.variables.pop(event.name, None)
                if old is not None:
                    self._drop(old, stim)
            case QueuePut():
                queue = self._queue(event.name, event.maxsize)
                self._hold(event.item, stim)
                queue.putters.append((event.waiter, event.client, event.item))
                self._serve_queue(queue, stim)
            case QueueGet():
                queue = self._queue(event.name, event.maxsize)
                queue.getters.append(_QueueWaiter(event.waiter, event.client, event.batch, event.n))
                self._serve_queue(queue, stim)
            case SemaphoreCreate():
                if event.max_leases < 1:
                    raise ValueError(f"max_leases must be at least 1, got {event.max_leases}")
                self.semaphores.setdefault(event.name, _Semaphore(event.max_leases))
            case SemaphoreAcquire():
                sem = self.semaphores.setdefault(event.name, _Semaphore(1))
                sem.waiting.append((event.waiter, event.lease, event.client))
                self._serve_semaphore(sem, stim)
            case SemaphoreRelease():
                known = self.semaphores.get(event.name)
                if known is None or event.lease not in known.leases:
                    self._out.append(Reply(waiter=event.waiter, status=NOT_HELD, stimulus_id=stim))
                    return
                del known.leases[event.lease]
                self._reply(event.waiter, None, stim)
                self._serve_semaphore(known, stim)
            case EventSet():
                self.events.add(event.name)
                for waiter, _ in self._event_waiters.pop(event.name, []):
                    self._reply(waiter, True, stim)
            case EventClear():
                self.events.discard(event.name)
            case EventWait():
                if event.name in self.events:
                    self._reply(event.waiter, True, stim)
                else:
                    self._event_waiters.setdefault(event.name, []).append((event.waiter, event.client))
            case MultiLockAcquire():
                self._multiwaiting.append(event)
                self._serve_multilocks(stim)
            case MultiLockRelease():
                held = self._multileases.pop(event.lease, None)
                if held is None:
                    self._out.append(Reply(waiter=event.waiter, status=NOT_HELD, stimulus_id=stim))
                    return
                for name in held[0]:
                    del self._multilocks[name]
                self._reply(event.waiter, None, stim)
                self._serve_multilocks(stim)
            case PublishDataset():
                taken = sorted(name for name in event.items if name in self.datasets)
                if taken and not event.override:
                    self._out.append(Reply(waiter=event.waiter, value=taken, status="exists", stimulus_id=stim))
                    return
                for name, item in event.items.items():
                    self._hold(item, stim)
                    old = self.datasets.get(name)
                    self.datasets[name] = item
                    if old is not None:
                        self._drop(old, stim)
                self._reply(event.waiter, None, stim)
            case UnpublishDataset():
                old = self.datasets.pop(event.name, None)
                if old is not None:
                    self._drop(old, stim)
            case CancelWait():
                if self._forget_waiter(event.waiter, stim):
                    self._out.append(Reply(waiter=event.waiter, status=TIMED_OUT, stimulus_id=stim))
            case ClientGone():
                self._client_gone(event.client, stim)
            case _:  # pragma: no cover - the union is exhaustive
                raise TypeError(f"not a coordination event: {event!r}")

    # ------------------------------------------------------------ helpers
    def _reply(self, waiter: str, value: object, stimulus_id: str) -> None:
        self._out.append(Reply(waiter=waiter, value=value, stimulus_id=stimulus_id))

    def _hold(self, item: Item, stimulus_id: str) -> None:
        new = []
        for key in item.keys:
            self._held[key] += 1
            if self._held[key] == 1:
                new.append(key)
        if new:
            self._out.append(HoldKeys(keys=tuple(new), stimulus_id=stimulus_id))

    def _drop(self, item: Item, stimulus_id: str) -> None:
        gone = []
        for key in item.keys:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]
                gone.append(key)
        if gone:
            self._out.append(DropKeys(keys=tuple(gone), stimulus_id=stimulus_id))

    def _queue(self, name: str, maxsize: int) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            if maxsize < 0:
                raise ValueError(f"maxsize must be 0 (unbounded) or more, got {maxsize}")
            queue = self.queues[name] = _Queue(maxsize)
        return queue

    def _serve_queue(self, queue: _Queue, stimulus_id: str) -> None:
        """Let waiting puts in while there is room, and answer waiting gets
        in order, until neither can go on."""
        items, getters, putters = queue.items, queue.getters, queue.putters
        while True:
            while putters and (queue.maxsize <= 0 or len(items) < queue.maxsize):
                waiter, _, item = putters.popleft()
                items.append(item)
                if waiter:
                    self._reply(waiter, None, stimulus_id)
            if not getters:
                return
            first = getters[0]
            if first.batch and first.n is None:
                first.taken.extend(items)
                items.clear()
            else:
                want = 1 if not first.batch else first.n or 0
                while items and len(first.taken) < want:
                    first.taken.append(items.popleft())
                if len(first.taken) < want:
                    if putters and len(items) < queue.maxsize:
                        continue  # taking made room: let puts in, take again
                    return
            getters.popleft()
            taken, first.taken = first.taken, []
            # the getter holds the futures now: they leave the queue's hold
            # after the reply (the runtime makes the getter want them first)
            self._reply(first.waiter, taken, stimulus_id)
            for item in taken:
                self._drop(item, stimulus_id)

    def _give_back(self, queue: _Queue, getter: _QueueWaiter) -> None:
        """A get of ``n`` gave up: what it took goes back to the queue's front."""
        queue.items.extendleft(reversed(getter.taken))
        getter.taken = []

    def _serve_semaphore(self, sem: _Semaphore, stimulus_id: str) -> None:
        while sem.waiting and len(sem.leases) < sem.max_leases:
            waiter, lease, client = sem.waiting.popleft()
            sem.leases[lease] = client
            self._reply(waiter, True, stimulus_id)

    def _serve_multilocks(self, stimulus_id: str) -> None:
        """Grant the waiting multi-lock requests that can be, first come first served."""
        still: deque[MultiLockAcquire] = deque()
        for request in self._multiwaiting:
            free = [name for name in dict.fromkeys(request.names) if name not in self._multilocks]
            need = len(set(request.names)) if request.num_locks is None else request.num_locks
            if len(free) >= need:
                taken = tuple(free[:need])
                for name in taken:
                    self._multilocks[name] = request.lease
                self._multileases[request.lease] = (taken, request.client)
                self._reply(request.waiter, True, stimulus_id)
            else:
                still.append(request)
        self._multiwaiting = still

    def _forget_waiter(self, waiter: str, stimulus_id: str) -> bool:
        """Drop the waiting request ``waiter``; whether it was waiting."""
        found = False
        for name, waiters in list(self._variable_waiters.items()):
            kept = [w for w in waiters if w[0] != waiter]
            found |= len(kept) != len(waiters)
            self._variable_waiters[name] = kept
        for queue in self.queues.values():
            found |= self._forget_in_queue(queue, lambda w, c: w == waiter, stimulus_id)
        for sem in self.semaphores.values():
            kept_s = deque(w for w in sem.waiting if w[0] != waiter)
            found |= len(kept_s) != len(sem.waiting)
            sem.waiting = kept_s
        for name, waiters in list(self._event_waiters.items()):
            kept = [w for w in waiters if w[0] != waiter]
            found |= len(kept) != len(waiters)
            self._event_waiters[name] = kept
        kept_m = deque(r for r in self._multiwaiting if r.waiter != waiter)
        found |= len(kept_m) != len(self._multiwaiting)
        self._multiwaiting = kept_m
        return found

    def _forget_in_queue(
        self, queue: _Queue, match: Callable[[str, str], bool], stimulus_id: str
    ) -> bool:
        """Drop the gets and puts of ``queue`` that ``match(waiter, client)``:
        a get's items go back, a put's item is never stored; whether any was
        dropped. The queue is served again (a get's items may serve others)."""
        found = False
        for getter in [g for g in queue.getters if match(g.waiter, g.client)]:
            queue.getters.remove(getter)
            self._give_back(queue, getter)
            found = True
        for put in [p for p in queue.putters if match(p[0], p[1])]:
            queue.putters.remove(put)
            self._drop(put[2], stimulus_id)
            found = True
        if found:
            self._serve_queue(queue, stimulus_id)
        return found

    def _client_gone(self, client: str, stimulus_id: str) -> None:
        for name, waiters in list(self._variable_waiters.items()):
            self._variable_waiters[name] = [w for w in waiters if w[1] != client]
        for queue in self.queues.values():
            self._forget_in_queue(queue, lambda w, c: c == client, stimulus_id)
        for name, waiters in list(self._event_waiters.items()):
            self._event_waiters[name] = [w for w in waiters if w[1] != client]
        for sem in self.semaphores.values():
            sem.waiting = deque(w for w in sem.waiting if w[2] != client)
            for lease in [lease for lease, holder in sem.leases.items() if holder == client]:
                del sem.leases[lease]
            self._serve_semaphore(sem, stimulus_id)
        self._multiwaiting = deque(r for r in self._multiwaiting if r.client != client)
        for lease, (names, holder) in list(self._multileases.items()):
            if holder == client:
                del self._multileases[lease]
                for name in names:
                    del self._multilocks[name]
        self._serve_multilocks(stimulus_id)
