"""The client's engine: one link to the scheduler, futures' states, data fetches.

Everything here runs in the client's event loop thread (the caller's loop for
an asynchronous client; the blocking portal's thread for a synchronous one)
and uses anyio only, so it works under trio and asyncio alike. The entry
points safe from any thread are :meth:`ClientCore.submit_tasks`, which
writes a submission from the caller's thread or queues it for the loop
through the :class:`ThreadInbox` (see below), and
:meth:`ClientCore.release_ref`, which the ``Future.__del__`` of a dropped
future calls. Waiting for results and fetching them from the workers is
the :class:`~trioclust.client.results.ResultFetching` mixin's; the messages a
submission or a release sends are built in :mod:`trioclust.client.graph_messages`.

Dropped futures. ``release_ref`` runs in a finalizer: on any thread, at any
moment (a garbage collection), also while that thread holds one of this
client's locks (taking a reference, writing a submission). So it takes no
lock: it appends the state to ``_dropped`` (a deque: atomic) and, unless the
loop *watches* (below) and this is a user thread, wakes the loop through the
inbox (one wake-up for all the drops until the loop's next count). A drop is *counted* later, holding the locks, by whoever sends next:
the loop at the end of a drain of the inbox or before a message it sends
(:meth:`ClientCore._flush_releases`), or a user thread in front of the
submission it writes itself. Counting takes the state's reference; the last
one deletes the state and releases the key. A submission of the same key
made before the drop is counted takes a reference first, so the key stays.

Release ordering: a release never overtakes the submission of its key, and
a new submission never overtakes a release. The first holds because drops
are counted only once every call queued in the inbox before them has run:
the counter takes its snapshot of ``_dropped`` first and then checks that
the inbox is empty (idle, for a user thread); never from inside a drain,
where the call running may send something older than the drops. The second
holds because counting and handing the release to the link happen under
``_release_lock``, which a thread's own write holds too, and a thread writes
only while the link's outbox is empty and the inbox idle.

Submissions from the user's thread, written there. Handing a submission to
the loop thread costs a wake-up of that loop on the round trip's path. So a
synchronous client's thread writes its submission itself when nothing is
queued in the inbox or running from it (the inbox is idle) and the link is
idle (:meth:`Link.send_from_thread`; TCP under trio), with the keys of the
drops it counts in front of it (``release-keys``). Otherwise it queues the
submission through the inbox; the loop counts the drops after it.

Drops on user threads do not wake the loop while it *watches*: for
``comm.lazy-linger`` after it hands out results, the moment futures get
dropped, they wait for that thread's next submission; then the loop counts
what is left itself. A drop appends first and reads ``_release_watch``
after, so one that races the end of the watch is seen by its count or
wakes the loop.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from trioclust import config
from trioclust.client.futures import Future, FutureState
from trioclust.client.graph_messages import (
    GRAPH_CHUNK,
    GraphTask,
    _bridge_keys,
    _graph_messages,
    _release_message,
    stimulus_id,
)
from trioclust.client.inbox import ThreadInbox
from trioclust.client.remote_exceptions import rebuild_exception
from trioclust.client.results import ResultFetching
from trioclust.comm import Link
from trioclust.comm import connect as comm_connect
from trioclust.comm.pool import ConnectionPool
from trioclust.errors import CommClosedError, ProtocolError, RemoteError, SchedulerLostError
from trioclust.protocol import messages as msgs
from trioclust.protocol import serialize
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.client.client import Client
    from trioclust.security import Security

logger = logging.getLogger("trioclust.client")


class _ClosedInbox(ThreadInbox):
    """Stands in before the client starts and after it closed: drops calls."""

    def __init__(self) -> None:  # no socket pair
        self._after_drain = None
        self._draining = False
        self._calls = deque()
        self._pending = False
        self._closed = True

    def close(self) -> None:
        return None


_NO_INBOX = _ClosedInbox()


def _wake() -> None:
    """Queued to wake the loop: the drain that runs it counts the drops."""


class ClientCore(ResultFetching):
    """The asynchronous machinery behind :class:`trioclust.Client`."""

    def __init__(
        self,
        client: Client,
        address: str,
        *,
        name: str,
        timeout: float | None,
        security: Security | None = None,
    ) -> None:
        self.client = client
        self.security = security
        self.address = address
        self.name = name
        self.timeout = timeout
        self.id = ""
        self.status = "created"
        self._states: dict[Key, FutureState] = {}
        self._lock = threading.Lock()  # over _states and the states' refs
        # states of dropped futures, not yet counted (see the module's notes)
        self._dropped: deque[FutureState] = deque()
        self._wake_queued = False  # a drop queued a wake-up that no count has seen yet
        self._release_watch = False  # the loop counts user threads' drops within lazy-linger
        # counting drops and handing their releases to the link, a thread's own write
        self._release_lock = threading.Lock()
        self._watch_armed: anyio.Event | None = None
        self.inbox: ThreadInbox = _NO_INBOX  # the real one exists while running
        #: the event loop thread's id (0 before the client starts)
        self.loop_thread = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._link: Link | None = None
        self._pool: ConnectionPool | None = None
        self._priority = 0
        # set (and replaced) at each reconnect to a scheduler that came back
        self._reconnected: anyio.Event | None = None

    # --------------------------------------------------------- life cycle
    async def __aenter__(self) -> ClientCore:
        comm = await comm_connect(
            self.address, role="client", name=self.name, timeout=self.timeout, security=self.security
        )
        self.loop_thread = threading.get_ident()
        self._reconnected = anyio.Event()
        self.inbox = ThreadInbox(after_drain=partial(self._flush_releases, at_drain_end=True))
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            self._link = self._new_link(comm)
            await self._task_group.start(self._run_link, self._link)
            self.id = await self._link.request("client-id")
            self._pool = ConnectionPool(
                self._task_group, role="client", name=self.id, security=self.security
            )
            await self._task_group.start(self.inbox.run)
            await self._task_group.start(self._watch_releases)
        except BaseException as exc:
            self._task_group.cancel_scope.cancel()
            try:
                await self._task_group.__aexit__(type(exc), exc, exc.__traceback__)
            finally:
                self.inbox.close()
            raise
        self.status = "running"
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self.status in ("closing", "closed") or self._task_group is None:
            return
        self.status = "closing"
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(config.get_float("runtime.close-timeout")):
                self.inbox.drain()  # runs what user threads queued
                self._flush_releases()
                with self._lock:
                    states = list(self._states.values())
                for state in states:
                    if not state.done():
                        state.cancel("the client was closed")
                if self._pool is not None:
                    await self._pool.aclose()
                if self._link is not None:
                    await self._link.aclose()
        # exited at the nesting level it was entered at (__aenter__), never
        # inside the scopes above: that is what keeps the scope stack intact
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        self.inbox.close()  # after its reader task has ended
        self.inbox = _NO_INBOX
        self.status = "closed"
        self._wake_reconnect_waiters()
        self._dropped.clear()  # nothing counts them any more (release_ref checks)

    def _new_link(self, comm: Any) -> Link:
        return Link(
            comm,
            {
                "keys-in-memory": self._on_keys_in_memory,
                "task-erred": self._on_task_erred,
                "lost-data": self._on_lost_data,
                "restart": self._on_restart,
            },
            name=f"client {self.name} -> scheduler",
        )

    async def _run_link(self, link: Link, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await link.run(task_status=task_status)
        finally:
            if self.status == "running":
                self._lost_scheduler()

    def _lost_scheduler(self) -> None:
        """The link broke: fail the pending futures, then try to reconnect for
        ``client.reconnect-timeout`` seconds (status ``"reconnecting"``; every
        call raises :class:`SchedulerLostError` meanwhile) or give up at once
        (``"disconnected"``)."""
        reconnect = config.get_float("client.reconnect-timeout")
        self.status = "reconnecting" if reconnect > 0 else "disconnected"
        logger.error("Lost the connection to the scheduler at %s", self.address)
        error = SchedulerLostError(
            f"The connection to the scheduler at {self.address} broke; the results of "
            f"pending futures are lost. "
            + (
                f"This client reconnects to a scheduler at that address for up to "
                f"{reconnect:g} s (client.reconnect-timeout); submit again then."
                if reconnect > 0
                else "Check that the scheduler is running, then create a new Client."
            )
        )
        with self._lock:
            states = list(self._states.values())
        for state in states:
            if not state.done():
                state.fail(error, None, str(error))
        if reconnect > 0 and self._task_group is not None:
            self._task_group.start_soon(self._reconnect, reconnect)

    async def _reconnect(self, timeout: float) -> None:
        """Connect again to ``address``, retrying whatever fails (refused,
        reset mid-handshake, timeouts) with a growing pause, for ``timeout``
        seconds; then every call raises at once (status ``"disconnected"``)."""
        deadline = anyio.current_time() + timeout
        pause = 0.05
        while self.status == "reconnecting":
            left = deadline - anyio.current_time()
            if left <= 0:
                self.status = "disconnected"
                self._wake_reconnect_waiters()
                logger.error(
                    "Could not reconnect to the scheduler at %s within %g s (client.reconnect-timeout)",
                    self.address, timeout,
                )
                return
            link: Link | None = None
            try:
                with anyio.fail_after(left):
                    comm = await comm_connect(
                        self.address, role="client", name=self.name, timeout=left,
                        security=self.security,
                    )
                    link = self._new_link(comm)
                    assert self._task_group is not None
                    await self._task_group.start(self._run_link, link)
                    client_id = await link.request("client-id")
            except (OSError, CommClosedError, ProtocolError, TimeoutError) as exc:
                logger.debug("Reconnecting to %s: %s", self.address, exc)
                if link is not None:
                    await link.aclose()
                await anyio.sleep(min(pause, max(0.0, deadline - anyio.current_time())))
                pause = min(2 * pause, 1.0)
                continue
            if self.status != "reconnecting":  # closed meanwhile
                await link.aclose()
                return
            self.id, self._link = client_id, link
            self.status = "running"
            self._wake_reconnect_waiters()
            logger.info("Reconnected to the scheduler at %s", self.address)
            return

    def _wake_reconnect_waiters(self) -> None:
        if self._reconnected is not None:
            self._reconnected.set()
            self._reconnected = anyio.Event()

    async def wait_connected(self) -> None:
        """Return once this client is connected: at once while it is, after a
        reconnect while it reconnects (see ``client.reconnect-timeout``).

        Raises:
            SchedulerLostError: It is disconnected or closed, or gave up meanwhile.
        """
        while self.status == "reconnecting" and self._reconnected is not None:
            await self._reconnected.wait()
        if self.status != "running":
            raise SchedulerLostError(f"This client is {self.status}; it cannot reach {self.address}.")

    # ------------------------------------------------------ future states
    def take_ref(self, key: Key, state: FutureState | None = None) -> FutureState:
        """The shared state of ``key`` (created on first use), with one more Future on it.

        Safe from any thread.
        """
        with self._lock:
            if state is None:
                state = self._states.get(key)
                if state is None:
                    state = self._states[key] = FutureState(key)
            state.refs += 1
            return state

    def release_ref(self, state: FutureState) -> None:
        """A Future of ``state`` was dropped (any thread, from a finalizer).

        Takes no lock: queues the state for counting (see the module's notes).
        """
        self._dropped.append(state)
        if self.status == "closed":
            self._dropped.clear()  # nothing would count it: keep no value alive
        elif not self._release_watch or threading.get_ident() == self.loop_thread:
            # the loop counts it after whatever was queued before; one wake-up
            # serves every drop until the loop's next count
            if not self._wake_queued:
                self._wake_queued = True
                self.inbox.call_soon(_wake)

    def _count_drops(self, n: int) -> list[Key]:
        """Count the first ``n`` dropped states; the keys whose last Future went.

        Call it holding ``_release_lock``, and keep holding it until those
        keys are handed to the link or queued (see the module's notes).
        """
        keys: list[Key] = []
        dropped = self._dropped
        with self._lock:
            states = self._states
            for _ in range(n):
                state = dropped.popleft()
                state.refs -= 1
                if state.refs == 0 and states.get(state.key) is state:
                    del states[state.key]
                    keys.append(state.key)
        return keys

    async def _watch_releases(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Count the drops of user threads within ``comm.lazy-linger`` of
        being asked to watch (see the module's notes)."""
        linger = config.get_float("comm.lazy-linger")
        self._watch_armed = anyio.Event()
        task_status.started()
        while True:
            await self._watch_armed.wait()
            self._watch_armed = anyio.Event()
            await anyio.sleep(linger)
            self._release_watch = False  # a drop from now on wakes the loop
            self.inbox.drain()  # what was queued before the drops goes first
            self._flush_releases()

    def _watch_for_releases(self) -> None:
        """Results were handed out: their futures may be dropped soon."""
        if not self._release_watch and self._watch_armed is not None:
            self._release_watch = True
            self._watch_armed.set()

    def _flush_releases(self, *, at_drain_end: bool = False) -> None:
        """Count the drops and send their releases, unless a call queued in
        the inbox before them has not run yet (see the module's notes)."""
        if self.inbox.draining and not at_drain_end:
            return
        self._wake_queued = False  # before looking: a drop after this queues a wake-up
        if not self._dropped:
            return
        with self._release_lock:
            n = len(self._dropped)  # the snapshot first, then the inbox's check
            if self.inbox.has_calls():
                return  # the drain that runs them counts these after them
            self._send_releases(self._count_drops(n))

    def _send_releases(self, keys: list[Key]) -> None:
        if keys and self._link is not None and not self._link.closed:
            try:
                # nothing waits for a release: it goes with the next submit,
                # or on its own after comm.lazy-linger
                self._link.send(_release_message(keys), lazy=True)
            except CommClosedError:
                pass

    def send(self, msg: Any, *, weight: int = 1) -> None:
        """Send to the scheduler, after any queued releases (``weight``: see :meth:`Link.send`)."""
        if self.status != "running" or self._link is None:
            raise SchedulerLostError(
                f"This client is {self.status}: it cannot talk to the scheduler at {self.address}."
            )
        self.inbox.drain()  # whatever was queued before this goes first
        self._flush_releases()
        self._link.send(msg, weight=weight)

    # ---------------------------------------------------- scheduler events
    def _on_keys_in_memory(self, msg: msgs.KeysInMemoryMsg) -> None:
        self._watch_for_releases()
        states = self._states
        values = msg.get("values") or {}
        for key, type_name in zip(msg["keys"], msg["types"], strict=True):
            state = states.get(key)
            if state is not None:
                if key in values:
                    state.finish(type_name or "", values[key])
                else:
                    state.finish(type_name or "")

    def _on_task_erred(self, msg: msgs.KeyErredMsg) -> None:
        self._watch_for_releases()
        state = self._states.get(msg["key"])
        if state is not None:
            state.fail(msg["exception"], msg["traceback"], msg["exception_text"])

    def _on_lost_data(self, msg: msgs.LostDataMsg) -> None:
        state = self._states.get(msg["key"])
        if state is not None:
            state.lose()

    def _on_restart(self, msg: msgs.RestartClientMsg) -> None:
        """``client.restart``: the scheduler released every key; cancel every future."""
        with self._lock:
            states, self._states = list(self._states.values()), {}
        for state in states:
            if state.status != "cancelled":
                state.cancel("the cluster was restarted (client.restart)")

    # ------------------------------------------------------------- submit
    def next_priority(self, user_priority: int) -> int:
        """Lower runs first: the user's priority first, then submission order."""
        self._priority += 1
        return -user_priority * (1 << 40) + self._priority

    def next_priorities(self, user_priority: int, n: int) -> int:
        """The first of ``n`` consecutive priorities (a graph's tasks, in its order)."""
        first = self.next_priority(user_priority)
        self._priority += max(n - 1, 0)
        return first

    def held_keys(self) -> set[Key]:
        """The keys this client holds futures of (safe from any thread)."""
        with self._lock:
            return set(self._states)

    def submit_tasks(
        self, tasks: list[GraphTask], wanted: list[Key],
        encode: Callable[[Key, Any], Any] | None = None,
    ) -> list[Future]:
        """Create the futures for ``wanted`` and queue the graph for the scheduler.

        Safe from any thread and never waits: the message leaves from the loop,
        in order with everything else this client sends, batched with the
        submissions around it.

        Args:
            tasks: the graph's tasks, each after its dependencies.
            wanted: the keys to make futures of.
            encode: given, the tasks' run_specs are not pickled yet:
                ``encode(key, spec)`` pickles one, in the calling thread, a
                chunk of ``GRAPH_CHUNK`` at a time, and each chunk leaves as
                soon as it is pickled, so the cluster starts on the first
                while the caller pickles the rest (a dask graph of 10,000
                nodes takes a second to pickle). Its exception is raised
                here; the chunks sent before are then let go of.
        """
        if self.status != "running":
            raise SchedulerLostError(
                f"This client is {self.status}: it cannot talk to the scheduler at {self.address}."
            )
        if encode is not None and len(tasks) <= GRAPH_CHUNK:
            tasks = [(t[0], encode(t[0], t[1]), *t[2:]) for t in tasks]
            encode = None
        futures = [Future(key, self) for key in wanted]
        # a key the scheduler already knows keeps its state there; resending is harmless
        messages = _graph_messages(tasks, wanted)
        bridges: list[Key] = []
        if len(messages) > 1 and any(t[2] for t in tasks):  # (a map has no dependencies)
            keep: set[Key] = set(wanted)
            with self._lock:
                keep.update(self._states)
            bridges = _bridge_keys(messages, keep)
        if encode is not None:
            self._stream_graph(messages, bridges, encode)
        elif threading.get_ident() == self.loop_thread:
            self._send_graph(messages, bridges)
        elif bridges or not self._write_from_thread(messages):
            self.inbox.call_soon(partial(self._send_graph, messages, bridges))
        return futures

    def _stream_graph(
        self, messages: list[msgs.UpdateGraphMsg], bridges: list[Key], encode: Callable[[Key, Any], Any]
    ) -> None:
        """Pickle each message's run_specs, and send it before the next (see
        :meth:`submit_tasks`); the bridges are released after the last."""
        on_loop = threading.get_ident() == self.loop_thread

        def send(messages: list[msgs.UpdateGraphMsg], bridges: list[Key]) -> None:
            if on_loop:
                self._send_graph(messages, bridges)
            else:
                self.inbox.call_soon(partial(self._send_graph, messages, bridges))

        sent: set[Key] = set()
        for msg in messages:
            try:
                for task in msg["tasks"]:
                    task[1] = encode(task[0], task[1])
            except BaseException:
                # what the chunks sent want only to bridge to this one goes
                send([], [key for key in bridges if key in sent])
                raise
            sent.update(msg["wanted"])
            send([msg], [])
        send([], bridges)

    def _write_from_thread(self, messages: list[msgs.UpdateGraphMsg]) -> bool:
        """Write a one-message graph from this (user) thread, with the
        releases of the drops it counts in front, if the inbox and the link
        are idle; False if it was not written (see the module's notes)."""
        link = self._link
        if link is None or len(messages) != 1:
            return False
        with self._release_lock:
            n = len(self._dropped)  # the snapshot first, then the inbox's check
            if not self.inbox.idle():
                return False
            keys = self._count_drops(n) if n else []
            batch: list[Any] = [_release_message(keys), *messages] if keys else list(messages)
            if link.send_from_thread(batch):
                if link.comm.unsent:  # the kernel took only part: the loop's writer sends the rest
                    self.inbox.call_soon(link.wake)
                return True
            if keys:  # counted: they go first, the usual way
                self.inbox.call_soon(partial(self._send_releases, keys))
        return False

    def _send_graph(self, messages: list[msgs.UpdateGraphMsg], bridges: list[Key]) -> None:
        """Send the messages, then release ``bridges`` (if any)."""
        for msg in messages:
            self.send(msg, weight=len(msg["tasks"]))
        if bridges:  # the last chunk holds their dependents now
            self.send(_release_message(bridges))

    # ------------------------------------------------------------ requests
    async def request(self, op: str, **kwargs: Any) -> Any:
        """A request to the scheduler; a remote exception is re-raised as itself."""
        if self._link is None or self.status != "running":
            raise SchedulerLostError(f"This client is {self.status}; it cannot reach {self.address}.")
        self.inbox.drain()
        self._flush_releases()
        try:
            return await self._link.request(op, **kwargs)
        except RemoteError as exc:
            raise rebuild_exception(exc.exception, None, exc.text) from None

    async def scatter(
        self, data: dict[Key, Any], workers: list[str] | None, broadcast: bool
    ) -> list[Future]:
        """Send values straight to workers, then tell the scheduler who has them."""
        assert self._pool is not None
        if not workers:
            info = await self.request("scheduler-info")
            workers = sorted(info["workers"])
        if not workers:
            raise ValueError(
                "scatter needs at least one worker, and the scheduler at "
                f"{self.address} has none. Start workers (or wait_for_workers) first."
            )
        futures = [Future(key, self) for key in data]
        for future, value in zip(futures, data.values(), strict=True):
            future._state.type_name = type(value).__qualname__  # the scheduler's report has none
        targets: dict[str, dict[Key, Any]] = {}
        start = random.randrange(len(workers))
        for i, (key, value) in enumerate(data.items()):
            chosen = workers if broadcast else [workers[(start + i) % len(workers)]]
            for worker in chosen:
                targets.setdefault(worker, {})[key] = serialize(value)
        who_has: dict[Key, list[str]] = {}
        nbytes: dict[Key, int] = {}

        async def send(worker: str, values: dict[Key, Any]) -> None:
            assert self._pool is not None
            link = await self._pool.get(worker)
            await link.request("update-data", data=values)
            for key, value in values.items():
                who_has.setdefault(key, []).append(worker)
                nbytes[key] = value.nbytes

        async with anyio.create_task_group() as tg:
            for worker, values in targets.items():
                tg.start_soon(send, worker, values)
        await self.request(
            "update-data", who_has=who_has, nbytes=nbytes, stimulus_id=stimulus_id("update-data")
        )
        return futures

    def cancel(self, futures: list[Future], reason: str = "cancelled by the user") -> None:
        running = self.status == "running" and self._link is not None
        if running:
            self.inbox.drain()  # whatever was queued before this goes first
        keys: list[Key] = []
        with self._release_lock:  # no thread's write of a key cancelled here passes the release
            with self._lock:
                for future in futures:
                    state = future._state
                    if self._states.get(state.key) is state:
                        del self._states[state.key]
                        keys.append(state.key)
            if keys and running:
                assert self._link is not None
                self._link.send(_release_message(keys))
        for future in futures:
            if future._state.status != "cancelled":
                future._state.cancel(reason)
