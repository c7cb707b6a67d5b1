"""``wait`` and ``as_completed``: waiting on many futures, as in dask."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, NamedTuple

import anyio

from trioclust.client.collections import futures_of
from trioclust.client.futures import Future

ALL_COMPLETED = "ALL_COMPLETED"
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"


class DoneAndNotDoneFutures(NamedTuple):
    """What :func:`wait` returns: the futures done and those still pending."""

    done: set[Future]
    not_done: set[Future]


def wait(fs: Future | Iterable[Future], timeout: float | None = None, return_when: str = ALL_COMPLETED) -> Any:
    """Wait until futures are done (``concurrent.futures.wait``'s meaning).

    Args:
        fs: a future, an iterable of futures (of one client), or a
            persisted dask collection (its futures, :func:`futures_of`).
        timeout: seconds; then ``TimeoutError`` is raised.
        return_when: ``"ALL_COMPLETED"``, ``"FIRST_COMPLETED"`` or ``"FIRST_EXCEPTION"``.

    Returns a ``DoneAndNotDoneFutures(done, not_done)``; awaitable with an
    asynchronous client.
    """
    if isinstance(fs, Future):
        futures = [fs]
    elif hasattr(fs, "__dask_graph__"):
        futures = futures_of(fs)
    else:
        futures = list(fs)
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION, got {return_when!r}")
    if not futures:
        return DoneAndNotDoneFutures(set(), set())
    return futures[0].client._sync(_wait, futures, timeout, return_when)


async def _wait(futures: list[Future], timeout: float | None, return_when: str) -> DoneAndNotDoneFutures:
    def finished() -> bool:
        if return_when == ALL_COMPLETED:
            return all(f.done() for f in futures)
        if return_when == FIRST_COMPLETED:
            return any(f.done() for f in futures)
        return all(f.done() for f in futures) or any(f.status == "error" for f in futures)

    changed = anyio.Event()

    def notify(_: Future) -> None:
        changed.set()

    for future in futures:
        future._core.add_done_callback(future, notify)
    try:
        with anyio.fail_after(timeout):
            while not finished():
                await changed.wait()
                changed = anyio.Event()
    except TimeoutError:
        pending = sum(not f.done() for f in futures)
        raise TimeoutError(f"{pending} of {len(futures)} futures were not done after {timeout} s") from None
    done = {f for f in futures if f.done()}
    return DoneAndNotDoneFutures(done, {f for f in futures if f not in done})


class as_completed:
    """Iterate over futures in the order they finish.

    ``for future in as_completed(futures):`` with a synchronous client,
    ``async for future in as_completed(futures):`` with an asynchronous one.

    Args:
        futures: the futures to watch; more can be added with :meth:`add`.
        with_results: yield ``(future, result)`` pairs instead of futures.
        raise_errors: with ``with_results``, raise a failed task's exception
            (True) or yield the exception object as its result (False).
    """

    def __init__(
        self, futures: Iterable[Future] = (), with_results: bool = False, raise_errors: bool = True
    ) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        self._pending: set[Future] = set()
        self._ready: deque[Future] = deque()
        self._condition = threading.Condition()
        self._event: anyio.Event | None = None
        self._client: Any = None
        self.update(futures)

    def _on_done(self, future: Future) -> None:  # runs in the client's loop thread
        with self._condition:
            self._ready.append(future)
            self._condition.notify_all()
        if self._event is not None:
            self._event.set()

    def add(self, future: Future) -> None:
        """Watch one more future."""
        self.update([future])

    def update(self, futures: Iterable[Future]) -> None:
        """Watch more futures."""
        futures = [f for f in futures if f not in self._pending]
        if not futures:
            return
        self._client = futures[0].client
        with self._condition:
            self._pending.update(futures)
        self._client._call_in_loop(self._register, futures)

    def _register(self, futures: list[Future]) -> None:
        for future in futures:
            future._core.add_done_callback(future, self._on_done)

    def count(self) -> int:
        """How many futures have not been yielded yet."""
        with self._condition:
            return len(self._pending)

    def is_empty(self) -> bool:
        """Whether every future has been yielded."""
        return self.count() == 0

    def has_ready(self) -> bool:
        """Whether a finished future is waiting to be yielded."""
        with self._condition:
            return bool(self._ready)

    def clear(self) -> None:
        """Stop watching every future, finished or not."""
        with self._condition:
            self._pending.clear()
            self._ready.clear()
            self._condition.notify_all()
        if self._event is not None:
            self._event.set()

    def next_batch(self, block: bool = True) -> list[Any]:
        """Every finished future not yielded yet (at least one when ``block``),
        as ``(future, result)`` pairs with ``with_results``.

        Raises ``StopIteration`` when nothing is left to wait for. Synchronous
        clients only; iterate over :meth:`batches` with ``async for`` otherwise.
        """
        with self._condition:
            while block and not self._ready:
                if not self._pending:
                    raise StopIteration
                self._condition.wait()
            futures = self._take_ready()
        return [self._with_result(f) for f in futures] if self.with_results else futures

    def batches(self) -> _Batches:
        """Iterate over lists of the futures that finished since the last list.

        ``for batch in ac.batches():`` (synchronous client) or ``async for
        batch in ac.batches():`` (asynchronous); each list holds at least one
        future (``(future, result)`` pairs with ``with_results``).
        """
        return _Batches(self)

    def _take_ready(self) -> list[Future]:
        futures = list(self._ready)
        self._ready.clear()
        self._pending.difference_update(futures)
        return futures

    def _with_result(self, future: Future) -> Any:
        try:
            return (future, future.result())
        except Exception as exc:
            if self.raise_errors:
                raise
            return (future, exc)

    async def _next_batch_async(self) -> list[Any]:
        while True:
            with self._condition:
                if self._ready:
                    futures = self._take_ready()
                    break
                if not self._pending:
                    raise StopAsyncIteration
                self._event = anyio.Event()
            await self._event.wait()
        if not self.with_results:
            return futures
        out = []
        for future in futures:
            try:
                out.append((future, await future.result()))
            except Exception as exc:
                if self.raise_errors:
                    raise
                out.append((future, exc))
        return out

    # synchronous iteration
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        with self._condition:
            while not self._ready:
                if not self._pending:
                    raise StopIteration
                self._condition.wait()
            future = self._ready.popleft()
            self._pending.discard(future)
        if not self.with_results:
            return future
        try:
            return (future, future.result())
        except Exception as exc:
            if self.raise_errors:
                raise
            return (future, exc)

    # asynchronous iteration
    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            with self._condition:
                if self._ready:
                    future = self._ready.popleft()
                    self._pending.discard(future)
                    break
                if not self._pending:
                    raise StopAsyncIteration
                self._event = anyio.Event()
            await self._event.wait()
        if not self.with_results:
            return future
        try:
            return (future, await future.result())
        except Exception as exc:
            if self.raise_errors:
                raise
            return (future, exc)


class _Batches:
    """What :meth:`as_completed.batches` returns: iterable both ways."""

    def __init__(self, ac: as_completed) -> None:
        self._ac = ac

    def __iter__(self) -> Iterator[list[Any]]:
        return self

    def __next__(self) -> list[Any]:
        return self._ac.next_batch(block=True)

    def __aiter__(self) -> AsyncIterator[list[Any]]:
        return self

    async def __anext__(self) -> list[Any]:
        return await self._ac._next_batch_async()
