"""The scheduler's handlers for coordination requests: variables, queues,
locks and semaphores, events, multi-locks, published datasets and
fire-and-forget, around :class:`~trioclust.core.coordination.CoordinationState`.

Theory of operation
-------------------
Each request becomes a core event with a fresh ``waiter`` id, handled at once,
when the message is read, so requests take effect in the order a client sent
them (a ``variable-set`` before the ``release-keys`` of its future). A
request the core answers at once returns its reply from the handler itself;
one that must wait (a get, an acquire, an event's wait) returns an awaitable
that waits for the core's ``Reply`` at most the request's ``timeout``, and
then gives the request up (``CancelWait``), so nothing waits forever. A
client that disconnects gives up its waits, its leases and its locks
(``ClientGone``).

Stored futures stay on the cluster: the core's ``HoldKeys`` / ``DropKeys``
become ``WantKeys`` / ``ReleaseKeys`` of the pseudo-client ``coordination``
in the scheduler's task state, and a reply that hands stored futures to a
client makes that client want them first (``WantKeys``), before the store
lets go of them. ``fire-and-forget`` keys are wanted by the pseudo-client
``fire-and-forget`` until they are done.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import trio

from trioclust.core import coordination as co
from trioclust.core import events as ev
from trioclust.protocol import messages as msgs
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.core.scheduler_state import SchedulerState

#: The pseudo-client that wants fire-and-forget keys until they are done.
FIRE_AND_FORGET = "fire-and-forget"


class _Waiting:
    """One request waiting for the core's reply."""

    __slots__ = ("client", "done", "reply")

    def __init__(self, client: str) -> None:
        self.client = client
        self.done = trio.Event()
        self.reply: co.Reply | None = None


def _item(msg: Any) -> co.Item:
    return co.Item(value=msg["value"], keys=tuple(msg["keys"]))


def _wire(item: co.Item) -> msgs.StoredItem:
    return {"value": item.value, "keys": list(item.keys)}


def _answer(reply: co.Reply) -> msgs.CoordinationReply:
    value = reply.value
    if isinstance(value, co.Item):
        value = _wire(value)
    elif isinstance(value, list):
        value = [_wire(v) if isinstance(v, co.Item) else v for v in value]
    return {"status": reply.status, "value": value}


class CoordinationHandlers:
    """The Scheduler's coordination handlers (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Scheduler's

        state: SchedulerState

        def _handle(self, *events: Any) -> None: ...

    def _init_coordination(self) -> None:
        self.coordination = co.CoordinationState()
        self._waiting: dict[str, _Waiting] = {}
        self._waiter_ids = itertools.count()
        self._forgetting: list[Key] = []

    # ------------------------------------------------------------ plumbing
    def _coordinate(self, *events: Any) -> None:
        """Feed the core, carry out its instructions in order."""
        scheduler_events: list[Any] = []
        for i in self.coordination.handle(*events):
            if type(i) is co.Reply:
                waiting = self._waiting.get(i.waiter)
                if waiting is None:
                    continue
                waiting.reply = i
                keys = _keys_in(i.value)
                if keys:  # the client wants them before the store lets go
                    scheduler_events.append(
                        ev.WantKeys(client=waiting.client, keys=keys, stimulus_id=i.stimulus_id)
                    )
                waiting.done.set()
            elif type(i) is co.HoldKeys:
                scheduler_events.append(ev.WantKeys(client=co.HOLDER, keys=i.keys, stimulus_id=i.stimulus_id))
            elif type(i) is co.DropKeys:
                scheduler_events.append(
                    ev.ReleaseKeys(client=co.HOLDER, keys=i.keys, stimulus_id=i.stimulus_id)
                )
        if scheduler_events:
            self._handle(*scheduler_events)

    def _now(self, client: str, make: Any) -> msgs.CoordinationReply:
        """A request the core answers at once."""
        waiter = f"{client}-{next(self._waiter_ids)}"
        waiting = self._waiting[waiter] = _Waiting(client)
        try:
            self._coordinate(make(waiter))
        finally:
            del self._waiting[waiter]
        assert waiting.reply is not None, "the core left a non-blocking request unanswered"
        return _answer(waiting.reply)

    def _wait(self, client: str, make: Any, timeout: float | None) -> Awaitable[msgs.CoordinationReply]:
        """A request that may wait: fed now, answered within ``timeout``."""
        waiter = f"{client}-{next(self._waiter_ids)}"
        waiting = self._waiting[waiter] = _Waiting(client)
        self._coordinate(make(waiter))
        return self._await_reply(waiter, waiting, timeout)

    async def _await_reply(
        self, waiter: str, waiting: _Waiting, timeout: float | None
    ) -> msgs.CoordinationReply:
        try:
            if waiting.reply is None:
                with trio.move_on_after(math.inf if timeout is None else max(timeout, 0.0)):
                    await waiting.done.wait()
        finally:
            if waiting.reply is None:  # timed out, or the link went: give it up
                self._coordinate(co.CancelWait(waiter=waiter, stimulus_id=f"give-up-{waiter}"))
            del self._waiting[waiter]
        assert waiting.reply is not None
        return _answer(waiting.reply)

    def _coordination_client_gone(self, client: str) -> None:
        self._coordinate(co.ClientGone(client=client, stimulus_id=f"{client}-gone-{time.time()}"))

    # ----------------------------------------------------------- variables
    def _client_variable_set(self, client: str, msg: msgs.VariableSetMsg) -> None:
        self._coordinate(co.VariableSet(name=msg["name"], item=_item(msg), stimulus_id=msg["stimulus_id"]))

    def _client_variable_get(
        self, client: str, msg: msgs.VariableGetMsg
    ) -> Awaitable[msgs.CoordinationReply]:
        return self._wait(
            client,
            lambda w: co.VariableGet(name=msg["name"], client=client, waiter=w, stimulus_id=f"get-{w}"),
            msg.get("timeout"),
        )

    def _client_variable_delete(self, client: str, msg: msgs.VariableDeleteMsg) -> None:
        self._coordinate(co.VariableDelete(name=msg["name"], stimulus_id=msg["stimulus_id"]))

    # -------------------------------------------------------------- queues
    def _client_queue_put(self, client: str, msg: msgs.QueuePutMsg) -> Awaitable[msgs.CoordinationReply]:
        return self._wait(
            client,
            lambda w: co.QueuePut(
                name=msg["name"], item=_item(msg), client=client, waiter=w, maxsize=msg["maxsize"],
                stimulus_id=msg["stimulus_id"],
            ),
            msg.get("timeout"),
        )

    def _client_queue_get(self, client: str, msg: msgs.QueueGetMsg) -> Awaitable[msgs.CoordinationReply]:
        return self._wait(
            client,
            lambda w: co.QueueGet(
                name=msg["name"], client=client, waiter=w, batch=msg["batch"], n=msg.get("n"),
                maxsize=msg["maxsize"], stimulus_id=f"get-{w}",
            ),
            msg.get("timeout"),
        )

    def _client_queue_size(self, client: str, msg: msgs.QueueSizeMsg) -> int:
        return self.coordination.qsize(msg["name"])

    # ---------------------------------------------------------- semaphores
    def _client_semaphore_create(self, client: str, msg: msgs.SemaphoreCreateMsg) -> None:
        self._coordinate(
            co.SemaphoreCreate(name=msg["name"], max_leases=msg["max_leases"], stimulus_id=f"create-{msg['name']}")
        )

    def _client_semaphore_acquire(
        self, client: str, msg: msgs.SemaphoreAcquireMsg
    ) -> Awaitable[msgs.CoordinationReply]:
        return self._wait(
            client,
            lambda w: co.SemaphoreAcquire(
                name=msg["name"], lease=msg["lease"], client=client, waiter=w, stimulus_id=f"acquire-{w}"
            ),
            msg.get("timeout"),
        )

    def _client_semaphore_release(
        self, client: str, msg: msgs.SemaphoreReleaseMsg
    ) -> msgs.CoordinationReply:
        return self._now(
            client,
            lambda w: co.SemaphoreRelease(name=msg["name"], lease=msg["lease"], waiter=w, stimulus_id=f"release-{w}"),
        )

    def _client_semaphore_value(self, client: str, msg: msgs.SemaphoreValueMsg) -> int:
        return self.coordination.semaphore_value(msg["name"])

    # -------------------------------------------------------------- events
    def _client_event_set(self, client: str, msg: msgs.EventSetMsg) -> None:
        self._coordinate(co.EventSet(name=msg["name"], stimulus_id=msg["stimulus_id"]))

    def _client_event_clear(self, client: str, msg: msgs.EventClearMsg) -> None:
        self._coordinate(co.EventClear(name=msg["name"], stimulus_id=msg["stimulus_id"]))

    def _client_event_wait(self, client: str, msg: msgs.EventWaitMsg) -> Awaitable[msgs.CoordinationReply]:
        return self._wait(
            client,
            lambda w: co.EventWait(name=msg["name"], client=client, waiter=w, stimulus_id=f"wait-{w}"),
            msg.get("timeout"),
        )

    def _client_event_is_set(self, client: str, msg: msgs.EventIsSetMsg) -> bool:
        return self.coordination.is_set(msg["name"])

    # ---------------------------------------------------------- multi-locks
    def _client_multilock_acquire(
        self, client: str, msg: msgs.MultiLockAcquireMsg
    ) -> Awaitable[msgs.CoordinationReply]:
        return self._wait(
            client,
            lambda w: co.MultiLockAcquire(
                names=tuple(msg["names"]), num_locks=msg.get("num_locks"), lease=msg["lease"],
                client=client, waiter=w, stimulus_id=f"acquire-{w}",
            ),
            msg.get("timeout"),
        )

    def _client_multilock_release(
        self, client: str, msg: msgs.MultiLockReleaseMsg
    ) -> msgs.CoordinationReply:
        return self._now(
            client, lambda w: co.MultiLockRelease(lease=msg["lease"], waiter=w, stimulus_id=f"release-{w}")
        )

    # ------------------------------------------------------------ datasets
    def _client_publish_dataset(
        self, client: str, msg: msgs.PublishDatasetMsg
    ) -> msgs.CoordinationReply:
        items = {name: _item(item) for name, item in msg["datasets"].items()}
        return self._now(
            client,
            lambda w: co.PublishDataset(
                items=items, override=msg["override"], waiter=w, stimulus_id=msg["stimulus_id"]
            ),
        )

    def _client_unpublish_dataset(self, client: str, msg: msgs.UnpublishDatasetMsg) -> None:
        self._coordinate(co.UnpublishDataset(name=msg["name"], stimulus_id=msg["stimulus_id"]))

    def _client_get_dataset(self, client: str, msg: msgs.GetDatasetMsg) -> msgs.StoredItem | None:
        item = self.coordination.datasets.get(msg["name"])
        if item is None:
            return None
        if item.keys:
            self._handle(ev.WantKeys(client=client, keys=item.keys, stimulus_id=f"get-dataset-{client}"))
        return _wire(item)

    def _client_list_datasets(self, client: str, msg: msgs.ListDatasetsMsg) -> list[str]:
        return sorted(self.coordination.datasets)

    # ------------------------------------------------- keys that clients hold
    def _client_want_keys(self, client: str, msg: msgs.WantKeysMsg) -> None:
        self._handle(ev.WantKeys(client=client, keys=tuple(msg["keys"]), stimulus_id=msg["stimulus_id"]))

    def _client_fire_and_forget(self, client: str, msg: msgs.FireAndForgetMsg) -> None:
        self._handle(
            ev.WantKeys(client=FIRE_AND_FORGET, keys=tuple(msg["keys"]), stimulus_id=msg["stimulus_id"])
        )

    def _forget_done(self, key: Key) -> None:
        """A fire-and-forget key is done: release it once this pass is over."""
        self._forgetting.append(key)

    def _release_forgotten(self) -> None:
        if self._forgetting:
            keys, self._forgetting = tuple(self._forgetting), []
            self._handle(ev.ReleaseKeys(client=FIRE_AND_FORGET, keys=keys, stimulus_id=f"forget-{time.time()}"))


def _keys_in(value: object) -> tuple[str, ...]:
    if isinstance(value, co.Item):
        return value.keys
    if isinstance(value, list):
        return tuple(key for v in value if isinstance(v, co.Item) for key in v.keys)
    return ()
