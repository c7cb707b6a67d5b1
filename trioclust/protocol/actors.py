"""What an actor is on the wire: the task that makes one, and the reference to it.

An actor is an object living on one worker. ``client.submit(Class, actor=True)``
sends a task whose function is a :class:`CreateActor`; the worker that runs it
keeps the instance in its table of actors and stores an :class:`ActorRef` as
the task's result. The reference travels like any small result; the client
turns it into an :class:`~trioclust.client.actors.Actor` handle, which calls
the instance's methods on that worker directly (``actor-execute``,
``actor-attribute``, declared in ``messages.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trioclust.protocol.messages import Key

__all__ = ["ActorRef", "CreateActor"]


@dataclass(frozen=True, slots=True)
class CreateActor:
    """The function of a task that makes an actor: ``cls(*args, **kwargs)``.

    A worker recognises it, keeps the instance, and stores an ``ActorRef`` as
    the result instead of the instance.
    """

    cls: type

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cls(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class ActorRef:
    """Where an actor lives: its key, its worker's address, and its class."""

    key: Key
    address: str
    cls: type
