"""Actors: handles on objects that live on one worker (Dask's ``Actor``).

``client.submit(Class, actor=True)`` sends a task whose function is a
:class:`~trioclust.protocol.actors.CreateActor`; the worker keeps the
instance and the task's result is an ``ActorRef`` (key, worker address,
class). The future's ``result()`` turns it into an :class:`Actor`, which
holds a future of the key, so the scheduler keeps the key (and the worker its
instance) while a handle exists.

Calls go straight to the actor's worker over the client's pooled link to it
(``actor-execute``, ``actor-attribute``), never through the scheduler. Order
is kept end to end: a synchronous client's thread writes a call itself when
the link is open and idle and nothing of the client's is queued for its
loop (``Link.send_from_thread``, the trick ``submit`` uses; see core.py's
notes); otherwise the call is queued into the client's event loop in the
order the user made it (the inbox is a FIFO) and written to the link there.
The worker runs the calls it receives one at a time in that order. While
the link is being opened, calls wait in ``_WorkerCalls.waiting`` and go out
in order once it is open. Each call's reply resolves its
:class:`ActorFuture` in the loop as the link reads it
(``Link.expect_reply``: no task wakes for it), and the user's thread wakes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from trioclust import task_context
from trioclust.client.futures import Future
from trioclust.client.remote_exceptions import rebuild_exception
from trioclust.client.results import deserialized
from trioclust.errors import (
    ActorLostError,
    CommClosedError,
    FutureCancelledError,
    ProtocolError,
    RemoteError,
)
from trioclust.protocol import messages as msgs
from trioclust.protocol import serialize
from trioclust.protocol.actors import ActorRef

if TYPE_CHECKING:
    from trioclust.client.core import ClientCore
    from trioclust.comm import Link

__all__ = ["Actor", "ActorFuture", "as_actor"]

_NO_VALUE = object()


class ActorFuture:
    """The outcome of one call to an actor's method (Dask's ``BaseActorFuture``).

    ``result()`` waits for it (returns an awaitable with an asynchronous
    client); ``await future`` works too. The result comes back as soon as the
    call ends and is kept here, not on the cluster.
    """

    __slots__ = ("_asynchronous", "_error", "_event", "_thread_event", "_value")

    def __init__(self, asynchronous: bool) -> None:
        self._asynchronous = asynchronous
        self._value: Any = _NO_VALUE
        self._error: BaseException | None = None
        self._thread_event = threading.Event()
        self._event: anyio.Event | None = None

    def done(self) -> bool:
        """Whether the call has finished (returned or raised)."""
        return self._thread_event.is_set()

    def _set(self, value: Any = _NO_VALUE, error: BaseException | None = None) -> None:
        """The outcome (in the client's event loop thread); the first one counts."""
        if self.done():
            return
        self._value, self._error = value, error
        self._thread_event.set()
        if self._event is not None:
            self._event.set()

    def _outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def result(self, timeout: float | None = None) -> Any:
        """The method's return value; raises what the method raised.

        Args:
            timeout: seconds to wait before raising ``TimeoutError``.
        """
        if self._asynchronous:
            return self._result(timeout)
        if not self._thread_event.wait(timeout):
            raise TimeoutError(f"The actor call did not finish within {timeout} s")
        return self._outcome()

    async def _result(self, timeout: float | None) -> Any:
        if not self.done():
            if self._event is None:
                self._event = anyio.Event()
            with anyio.fail_after(timeout):
                await self._event.wait()
        return self._outcome()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result(None).__await__()

    def __repr__(self) -> str:
        # Dask's repr, which its Futures page shows; done() tells the state
        return "<ActorFuture>"


class Actor:
    """A handle on an object living on one worker (Dask's ``Actor``).

    Calling a method (``counter.increment()``) runs it on that worker, in
    order with the other calls made there, and returns an
    :class:`ActorFuture` at once. Reading an attribute defined on the class
    (``counter.n``) returns its value (an awaitable ``ActorFuture`` with an
    asynchronous client). A method's exception is raised by ``result()``
    with its own type. If the worker dies the actor is lost with it: calls
    raise :class:`~trioclust.ActorLostError`.

    A handle passed to a task (an argument of ``submit``, a value in a
    ``Variable`` or ``Queue``) arrives there as a handle of its own, whose
    calls go from the task's worker straight to the actor's worker through
    the task's client (``get_client()``), as in Dask. Only the client's
    handle keeps the actor alive.
    """

    __slots__ = ("_cls", "_core", "_future", "_ref")

    def __init__(self, ref: ActorRef, future: Future | None) -> None:
        self._ref = ref
        self._cls = ref.cls
        self._future = future  # keeps the key (and so the instance) on the cluster
        self._core: ClientCore | None = None if future is None else future._core

    def _client_core(self) -> ClientCore:
        """The core that carries this handle's calls: its future's client's,
        or for a handle unpickled in a task, the task's client's (found on
        the first call: unpickling happens in the worker's event loop, which
        must not wait for a client to connect)."""
        core = self._core
        if core is None:
            context = task_context.current_task()
            if context is not None:
                client = context.worker.get_task_client()
            elif current_client is not None:
                client = current_client()
            else:  # pragma: no cover - importing trioclust sets it
                raise RuntimeError("an Actor handle needs trioclust's Client imported")
            core = self._core = client._core
        return core

    @property
    def key(self) -> msgs.Key:
        """The key of the task that made this actor."""
        return self._ref.key

    @property
    def _address(self) -> str:
        """The address of the worker holding the instance."""
        return self._ref.address

    def __repr__(self) -> str:
        return f"<Actor: {self._cls.__name__}, key={self.key}>"

    def __dir__(self) -> list[str]:
        return sorted(name for name in dir(self._cls) if not name.startswith("_"))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not hasattr(self._cls, name):
            raise AttributeError(f"{self._cls.__name__!r} actor has no attribute {name!r}")
        if callable(getattr(self._cls, name)):
            return partial(self._call_method, name)
        attribute: _Msg = {"op": "actor-attribute", "key": self.key, "attribute": name, "call": 0}
        future = self._send(attribute)
        return future if self._client_core().client.asynchronous else future.result()

    def _call_method(self, method: str, *args: Any, **kwargs: Any) -> ActorFuture:
        call: msgs.ActorExecuteMsg = {
            "op": "actor-execute", "key": self.key, "method": method,
            "args": serialize(args), "kwargs": serialize(kwargs), "call": 0,
        }
        return self._send(call)

    def _send(self, msg: _Msg) -> ActorFuture:
        core = self._client_core()
        future = ActorFuture(core.client.asynchronous)
        calls = _worker_calls(core, self._ref.address)
        if core.status != "running":
            future._set(error=FutureCancelledError(self.key, f"the client is {core.status}"))
        elif threading.get_ident() == core.loop_thread:
            calls.call(msg, future)
        elif not calls.write_from_thread(msg, future):
            # in order with this thread's other calls and submissions
            core.inbox.call_soon(partial(calls.call, msg, future))
        return future

    def __reduce__(self) -> Any:
        return (Actor, (self._ref, None))


_Msg = msgs.ActorExecuteMsg | msgs.ActorAttributeMsg

#: ``Client.current`` (set by the client module, which imports this one): the
#: client of a handle unpickled outside of a task
current_client: Callable[[], Any] | None = None


class _WorkerCalls:
    """A client's calls to the actors on one worker, in order (loop thread,
    but for :meth:`write_from_thread`)."""

    def __init__(self, core: ClientCore, address: str) -> None:
        self.core = core
        self.address = address
        self.link: Link | None = None
        self.waiting: list[tuple[_Msg, ActorFuture]] = []

    def write_from_thread(self, msg: _Msg, future: ActorFuture) -> bool:
        """Write the call from this (user) thread if the link to the worker is
        open and idle and nothing of this client's is queued for its loop (so
        the call keeps its place after the calls made before); False if not
        written, and the caller queues it for the loop."""
        link = self.link
        inbox = self.core.inbox
        if link is None or link.closed or not inbox.idle():
            return False
        msg["call"] = link.expect_reply(partial(self._resolve, msg, future))
        if link.send_from_thread([msg]):  # type: ignore[list-item]
            if link.comm.unsent:  # the kernel took only part: the loop's writer sends the rest
                inbox.call_soon(link.wake)
            return True
        # the reply is expected already: the loop sends the call, in order
        inbox.call_soon(partial(self._send_expected, link, msg, future))
        return True

    def call(self, msg: _Msg, future: ActorFuture) -> None:
        link = self.link
        if link is not None:
            if link.closed:  # the worker went: its actors went with it
                future._set(error=self._lost(msg, CommClosedError(link.close_reason)))
            else:
                self._send(link, msg, future)
            return
        self.waiting.append((msg, future))
        if len(self.waiting) == 1:
            assert self.core._task_group is not None
            self.core._task_group.start_soon(self._connect)

    async def _connect(self) -> None:
        pool = self.core._pool
        assert pool is not None
        try:
            link = await pool.get(self.address)
        except (OSError, ProtocolError) as exc:
            pool.forget(self.address)
            waiting, self.waiting = self.waiting, []
            for msg, future in waiting:
                future._set(error=self._lost(msg, exc))
            return
        self.link = link
        waiting, self.waiting = self.waiting, []
        for msg, future in waiting:
            self._send(link, msg, future)

    def _send(self, link: Link, msg: _Msg, future: ActorFuture) -> None:
        msg["call"] = link.expect_reply(partial(self._resolve, msg, future))
        self._send_expected(link, msg, future)

    def _send_expected(self, link: Link, msg: _Msg, future: ActorFuture) -> None:
        try:
            link.send(msg)  # type: ignore[arg-type]
        except CommClosedError as exc:
            future._set(error=self._lost(msg, exc))

    def _resolve(self, msg: _Msg, future: ActorFuture, result: Callable[[], Any]) -> None:
        """The reply came (in the loop, as the link reads it), or the link ended."""
        try:
            value = result()
        except RemoteError as exc:
            future._set(error=rebuild_exception(exc.exception, None, exc.text))
        except (OSError, ProtocolError) as exc:  # CommClosedError is an OSError
            if self.core.status != "running":
                future._set(error=FutureCancelledError(msg["key"], "the client was closed"))
                return
            if self.core._pool is not None:
                self.core._pool.forget(self.address)
            future._set(error=self._lost(msg, exc))
        else:
            try:
                future._set(deserialized(value))
            except Exception as exc:
                future._set(error=exc)

    def _lost(self, msg: _Msg, exc: BaseException) -> ActorLostError:
        return ActorLostError(
            f"The worker {self.address} holding actor {msg['key']!r} cannot be reached "
            f"({type(exc).__name__}: {exc}); the actor is lost with it. Submit a new one."
        )


_CALLS: weakref.WeakKeyDictionary[ClientCore, dict[str, _WorkerCalls]] = weakref.WeakKeyDictionary()


def _worker_calls(core: ClientCore, address: str) -> _WorkerCalls:
    by_worker = _CALLS.setdefault(core, {})
    calls = by_worker.get(address)
    if calls is None:
        calls = by_worker[address] = _WorkerCalls(core, address)
    return calls


def as_actor(value: Any, core: ClientCore) -> Any:
    """An :class:`Actor` for an ``ActorRef`` result; any other value as it is."""
    if isinstance(value, ActorRef):
        return Actor(value, Future(value.key, core))
    return value


class ActorCreationFuture(Future):
    """The future of ``submit(Class, actor=True)``: its result is an :class:`Actor`."""

    __slots__ = ()

    def result(self, timeout: float | None = None) -> Any:
        """The :class:`Actor` (see :meth:`Future.result`)."""
        if self._core.client.asynchronous:
            return self._actor(timeout)
        return as_actor(super().result(timeout), self._core)

    async def _actor(self, timeout: float | None) -> Any:
        return as_actor(await self._core.result_of(self, timeout), self._core)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._actor(None).__await__()


def actor_futures(futures: list[Future], core: ClientCore) -> list[Future]:
    """The futures of actor tasks as :class:`ActorCreationFuture`s."""
    return [ActorCreationFuture(f.key, core, f._state) for f in futures]

