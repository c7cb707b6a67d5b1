"""The actors a worker hosts: a mixin of :class:`~trioclust.runtime.worker.Worker`.

An actor is an instance made by a task (``CreateActor``) and kept in
``actors`` while the scheduler keeps its key here; the task's result is an
``ActorRef``. Clients call its methods over this worker's port. Each call or
attribute read goes into one queue as it arrives (the link's handlers run in
the order the messages came) and ``ActorCalls`` (runtime/actor_calls.py) runs
them one at a time, plain methods in a thread of their own as Dask's single
actor thread does, coroutine methods on this event loop.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import TYPE_CHECKING, Any

from trioclust.comm import Link
from trioclust.comm.link import error_reply
from trioclust.core.keys import Key
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs
from trioclust.protocol.actors import ActorRef

if TYPE_CHECKING:
    from trioclust.runtime.actor_calls import ActorCalls


class ActorHosting:
    """The Worker's actors (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Worker's

        address: str
        actors: dict[Key, Any]
        _actor_calls: ActorCalls

    def _create_actor(self, key: Key, cls: type, *args: Any, **kwargs: Any) -> ActorRef:
        """On a task thread: make the instance and keep it; the task's result is its reference."""
        instance = cls(*args, **kwargs)
        self.actors[key] = instance
        return ActorRef(key=key, address=self.address, cls=cls)

    def _actor(self, key: Key) -> Any:
        try:
            return self.actors[key]
        except KeyError:
            raise ValueError(
                f"Worker {self.address} holds no actor {key!r}: it was released, or this "
                f"worker restarted since it was made (actors are not recovered)"
            ) from None

    def _on_actor_execute(self, link: Link, msg: msgs.ActorExecuteMsg) -> None:
        try:
            method = getattr(self._actor(msg["key"]), msg["method"])
            args: Any = msg["args"]
            kwargs: Any = msg["kwargs"]
            if isinstance(args, Serialized):
                args = args.deserialize()
            if isinstance(kwargs, Serialized):
                kwargs = kwargs.deserialize()
        except Exception as exc:
            link.send(error_reply(msg["call"], exc))
            return
        call = partial(method, *(args or ()), **(kwargs or {}))
        self._actor_calls.submit(link, msg["call"], call, inspect.iscoroutinefunction(method))

    def _on_actor_attribute(self, link: Link, msg: msgs.ActorAttributeMsg) -> None:
        try:
            instance = self._actor(msg["key"])
        except ValueError as exc:
            link.send(error_reply(msg["call"], exc))
            return
        self._actor_calls.submit(link, msg["call"], partial(getattr, instance, msg["attribute"]), False)
