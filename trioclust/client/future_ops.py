"""What a :class:`~trioclust.Client` does with the futures it holds: gather
their results, scatter local data into new ones, retry erred ones, cancel
them (a mixin of ``Client``, with the helpers that find futures inside
nested lists, tuples, sets and dicts).

The methods follow ``Client``'s one code path: each returns an awaitable with
an asynchronous client (or with ``asynchronous=True``) and the value with a
synchronous one, through the ``_sync`` / ``_call_in_loop`` bridge that
``Client`` defines; the work is in :class:`~trioclust.client.core.ClientCore`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trioclust.client.actors import as_actor
from trioclust.client.futures import Future, FutureState
from trioclust.client.graph_messages import stimulus_id
from trioclust.client.keys import tokenize, unique_suffix
from trioclust.protocol.messages import Key

if TYPE_CHECKING:
    from trioclust.client.core import ClientCore


class FutureOperations:
    """``Client``'s gather, scatter, retry and cancel (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Client's

        asynchronous: bool
        _core: ClientCore

        def _sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...

        def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def gather(self, futures: Any, errors: str = "raise", asynchronous: bool | None = None) -> Any:
        """The results of futures, in the same structure (lists, tuples, dicts, sets).

        Args:
            futures: a future, or a (nested) list, tuple, dict or set of them.
            errors: ``"raise"`` re-raises the first task error; ``"skip"``
                leaves erred futures out of the result.
            asynchronous: True returns an awaitable even from a synchronous
                client, for a coroutine run on its loop by :meth:`sync`
                (Dask's "Asynchronous Operation" page).
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if asynchronous:
            return self._gather(futures, errors)
        return self._sync(self._gather, futures, errors)

    async def _gather(self, futures: Any, errors: str) -> Any:
        states: list[FutureState] = []
        _collect_states(futures, states)
        values = await self._core.gather_states(states, errors)
        return _replace_futures(futures, {k: as_actor(v, self._core) for k, v in values.items()})

    def scatter(
        self, data: Any, workers: list[str] | str | None = None, broadcast: bool = False,
        hash: bool = True, asynchronous: bool | None = None,
    ) -> Any:
        """Send local data to workers; returns futures in the same shape as ``data``.

        Args:
            data: one object; a list, tuple or any other iterable of objects
                (a list of futures comes back; a tuple for a tuple); or a
                dict (its keys become the futures' keys). A string, bytes or
                an array is one object.
            workers: addresses to send to (default: all, round-robin).
            broadcast: send every item to every chosen worker.
            hash: key by content (the same data scatters to the same key);
                False: a new random key each time.
            asynchronous: True returns an awaitable even from a synchronous
                client (as for :meth:`gather`).
        """
        if isinstance(workers, str):
            workers = [workers]
        if asynchronous:
            return self._scatter(data, workers, broadcast, hash)
        return self._sync(self._scatter, data, workers, broadcast, hash)

    async def _scatter(self, data: Any, workers: list[str] | None, broadcast: bool, hash: bool) -> Any:
        many = _is_collection(data)
        if many and not isinstance(data, dict | list | tuple):
            data = list(data)  # a set, a generator, any iterator: read it once
        if isinstance(data, dict):
            keys: list[Key] = [str(k) for k in data]
            items = list(data.values())
        else:
            items = list(data) if many else [data]
            keys = [
                f"{type(v).__name__}-{tokenize(v)[:32] if hash else unique_suffix()}" for v in items
            ]
        named = dict(zip(keys, items, strict=True))
        futures = await self._core.scatter(named, workers, broadcast)
        by_key = {f.key: f for f in futures}
        if isinstance(data, dict):
            return by_key
        if many:
            out = [by_key[k] for k in keys]
            return tuple(out) if isinstance(data, tuple) else out
        return futures[0]

    # ------------------------------------------------- placement: retries
    def retry(self, futures: Any, asynchronous: bool | None = None) -> Any:
        """Rerun erred futures, and the erred tasks they depend on.

        Their status goes back to ``"pending"`` and they compute again (with
        the ``retries`` they had left). Awaitable with an asynchronous client,
        or with ``asynchronous=True`` (as for :meth:`gather`).
        """
        found: list[Future] = []
        _collect_futures(futures, found)
        if asynchronous:
            return self._retry(found)
        return self._sync(self._retry, found)

    async def _retry(self, futures: list[Future]) -> None:
        erred = [f for f in futures if f._state.status == "error"]
        for future in erred:
            future._state.lose()  # pending again; the scheduler's answer follows
        if erred:
            await self._core.request(
                "retry", keys=[f.key for f in erred], stimulus_id=stimulus_id("retry")
            )

    def cancel(self, futures: Any, asynchronous: bool | None = None) -> Any:
        """Stop computing these futures and release their results on the cluster.

        Their ``result()`` then raises :class:`CancelledError`. Awaitable with an
        asynchronous client, or with ``asynchronous=True`` (as for :meth:`gather`).
        """
        found: list[Future] = []
        _collect_futures(futures, found)
        if asynchronous and not self.asynchronous:
            return self._cancel_in_loop(found)
        if self.asynchronous:
            self._core.cancel(found)
            return _done()
        self._call_in_loop(self._core.cancel, found)
        return None

    async def _cancel_in_loop(self, found: list[Future]) -> None:
        self._core.cancel(found)


def _is_collection(data: Any) -> bool:
    """Whether scatter sends ``data``'s items one by one (any iterable but a
    string, bytes or an array, which go as one object)."""
    if isinstance(data, str | bytes | bytearray | memoryview) or hasattr(data, "__array__"):
        return False
    return isinstance(data, dict) or hasattr(data, "__iter__")


async def _done() -> None:
    return None


def _collect_states(obj: Any, out: list[FutureState]) -> None:
    if isinstance(obj, Future):
        out.append(obj._state)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            _collect_states(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _collect_states(item, out)



def _collect_futures(obj: Any, out: list[Future]) -> None:
    if isinstance(obj, Future):
        out.append(obj)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            _collect_futures(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _collect_futures(item, out)



def _replace_futures(obj: Any, values: dict[Key, Any]) -> Any:
    if isinstance(obj, Future):
        return values[obj.key]
    if isinstance(obj, list | tuple | set | frozenset):
        return type(obj)(
            _replace_futures(item, values)
            for item in obj
            if not isinstance(item, Future) or item.key in values
        )
    if isinstance(obj, dict):
        return {
            k: _replace_futures(v, values)
            for k, v in obj.items()
            if not isinstance(v, Future) or v.key in values
        }
    return obj
