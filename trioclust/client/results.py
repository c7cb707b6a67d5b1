"""How a client gets its futures' results: waiting for a future's state,
fetching values from the workers that hold them, and what to do when a
fetch finds nothing (a mixin of :class:`~trioclust.client.core.ClientCore`).

Runs in the client's event loop thread, as the rest of ``ClientCore``. The
scheduler tells the client when a key is in memory (``keys-in-memory``) or
erred; a value small enough came with that message, else :meth:`_fetch` asks
the scheduler who has it and gets it from one of those workers over the
core's connection pool. A key the scheduler no longer holds for this client
is cancelled; one that could not be fetched waits for a change of its state
(the scheduler recomputes a lost key) at most ``comm.timeouts.connect``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from trioclust import config
from trioclust.client.futures import Future, FutureState
from trioclust.client.remote_exceptions import rebuild_exception
from trioclust.errors import CommClosedError, ProtocolError, RemoteError
from trioclust.protocol import Serialized
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.comm import Link
    from trioclust.comm.pool import ConnectionPool

logger = logging.getLogger("trioclust.client")


def deserialized(value: Any) -> Any:
    """``value`` itself, or what it holds if it is a :class:`Serialized`."""
    return value.deserialize() if isinstance(value, Serialized) else value


class ResultFetching:
    """``ClientCore``'s results: waits and fetches (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the ClientCore's

        _lock: threading.Lock
        _states: dict[Key, FutureState]
        _link: Link | None
        _pool: ConnectionPool | None

    async def result_of(self, future: Future, timeout: float | None) -> Any:
        state = future._state
        if timeout is None:  # no cancel scope: this is every await of a future
            return await self._result(state)
        with anyio.fail_after(timeout):
            return await self._result(state)

    async def _result(self, state: FutureState) -> Any:
        while True:
            await state.wait()
            if state.status != "finished":
                state.reraise()
            if state.has_value:
                return state.value
            values = await self._fetch([state])
            if state.key in values:
                return values[state.key]

    async def exception_of(self, future: Future, timeout: float | None) -> Any:
        state = future._state
        with anyio.fail_after(timeout):
            await state.wait()
        if state.status == "error":
            return rebuild_exception(state.exception, state.traceback, state.text)
        if state.status == "cancelled":
            try:
                state.reraise()
            except Exception as exc:
                return exc
        return None

    async def traceback_of(self, future: Future, timeout: float | None) -> Any:
        exc = await self.exception_of(future, timeout)
        return None if exc is None else exc.__traceback__

    def add_done_callback(self, future: Future, fn: Callable[[Future], Any]) -> None:
        state = future._state

        def call() -> None:
            fn(future)

        if state.done():
            call()
        else:
            state.callbacks.append(call)

    async def gather_states(self, states: Iterable[FutureState], errors: str) -> dict[Key, Any]:
        """Values of finished keys; raise (or skip) erred ones; wait for pending ones."""
        states = list({id(s): s for s in states}.values())
        values: dict[Key, Any] = {}
        while states:
            for state in states:
                await state.wait()
            to_fetch = []
            for state in states:
                if state.status != "finished":
                    if errors == "raise":
                        state.reraise()
                    continue
                if state.has_value:
                    values[state.key] = state.value
                else:
                    to_fetch.append(state)
            values.update(await self._fetch(to_fetch))
            # keys lost while fetching are being recomputed: wait for them again
            states = [s for s in to_fetch if s.key not in values]
        return values

    async def _fetch(self, states: list[FutureState]) -> dict[Key, Any]:
        """Get values from the workers holding them. Keys not found are left out.

        A key that could not be fetched has gone (its holder died or dropped
        it: the scheduler says so with ``lost-data`` and recomputes it) or
        sits where this client cannot reach: this waits for a change of one
        of the missing keys' states, at most ``comm.timeouts.connect``, and
        raises ``TimeoutError`` (an ``OSError``, as Dask's connect timeouts)
        if none came.
        """
        if not states:
            return {}
        assert self._link is not None
        assert self._pool is not None
        marks = [(s, s.changes) for s in states]  # before who-has: a loss meanwhile counts
        keys = [s.key for s in states]
        who_has: dict[Key, list[str]] = await self._link.request("who-has", keys=keys)
        for state in states:
            if state.key not in who_has:  # released on the scheduler: cancelled, at once
                with self._lock:  # a new submit of the key starts afresh
                    if self._states.get(state.key) is state:
                        del self._states[state.key]
                state.cancel("the scheduler does not hold this key for this client (it was released)")
        by_worker: dict[str, list[Key]] = {}
        for key in keys:
            holders = who_has.get(key) or []
            if holders:
                by_worker.setdefault(random.choice(holders), []).append(key)
        values: dict[Key, Any] = {}
        failures: dict[str, str] = {}
        unloadable: dict[str, Exception] = {}

        async def from_worker(worker: str, worker_keys: list[Key]) -> None:
            assert self._pool is not None
            try:
                link = await self._pool.get(worker)
                reply = await link.request("get-data", keys=worker_keys)
            except (OSError, CommClosedError, ProtocolError, RemoteError) as exc:
                logger.info("Could not get %d keys from %s: %s", len(worker_keys), worker, exc)
                failures[worker] = f"{type(exc).__name__}: {exc}"
                self._pool.forget(worker)
                return
            for key, value in reply["data"].items():
                try:
                    # a worker pickles all but scalars and bytes; a large
                    # bytes arrives as the buffer its frame was read into
                    values[key] = bytes(value) if isinstance(value, bytearray) else deserialized(value)
                except Exception as exc:  # this key's error; the others are fine
                    unloadable[key] = exc

        async with anyio.create_task_group() as tg:
            for worker, worker_keys in by_worker.items():
                tg.start_soon(from_worker, worker, worker_keys)
        for state in states:
            if state.key in unloadable:
                state.fail_here(unloadable[state.key])
        if len(values) < len(keys):
            missing = [(s, mark) for s, mark in marks if s.key not in values]
            await self._wait_for_a_change(missing, who_has, failures)
        return values

    async def _wait_for_a_change(
        self, missing: list[tuple[FutureState, int]], who_has: dict[Key, list[str]],
        failures: dict[str, str],
    ) -> None:
        """Return once one of the ``missing`` states changed since its mark;
        raise ``TimeoutError`` after ``comm.timeouts.connect`` without one."""
        if any(state.changes != mark for state, mark in missing):
            return
        timeout = config.get_float("comm.timeouts.connect")
        with anyio.move_on_after(timeout) as waited:
            async with anyio.create_task_group() as tg:

                async def watch(state: FutureState, mark: int) -> None:
                    await state.wait_changed(mark)
                    tg.cancel_scope.cancel()

                for state, mark in missing:
                    tg.start_soon(watch, state, mark)
        if not waited.cancelled_caught:
            return
        keys = [state.key for state, _ in missing]
        holders = sorted({w for key in keys for w in who_has.get(key) or []})
        why = "; ".join(f"{w}: {failures[w]}" for w in holders if w in failures)
        raise TimeoutError(
            f"Could not get {len(keys)} key(s) ({', '.join(map(str, keys[:3]))}{', ...' if len(keys) > 3 else ''}) "
            f"from the workers holding them ({', '.join(holders) or 'the scheduler names none'}) "
            f"within {timeout} s (comm.timeouts.connect), and the scheduler reported no loss"
            f"{': ' + why if why else ''}. Check that this client can reach the workers."
        )

