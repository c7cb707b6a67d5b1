"""Futures dropped at awkward moments: a finalizer must never wait for a lock.

``Future.__del__`` runs wherever the last reference goes, garbage collection
included, and that may be on a thread inside the client's own locked
sections (taking a reference, writing a submission). These tests drop
futures from a garbage collector's callback, with collections forced on
nearly every allocation, and from an argument's ``__reduce__`` while submit
pickles it. Each runs on a thread of its own with a deadline, so that a
deadlock fails the test instead of blocking the suite; the keys dropped must
still be released on the scheduler.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from trioclust import Client, Future
from trioclust.testing.cluster import cluster

DEADLINE = 30.0  # seconds; the work takes well under one


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with cluster(n_workers=1) as (scheduler_address, _):
        yield scheduler_address


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    # the module-wide cluster outlives single tests; tests/test_client_sync.py
    # checks that a cluster and a client leave nothing behind
    return


def inc(x: int) -> int:
    return x + 1


def _known(keys: list[str]) -> Callable[..., list[str]]:
    def known(dask_scheduler: Any) -> list[str]:
        return [key for key in keys if key in dask_scheduler.state.tasks]

    return known


def _within_deadline(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a thread of its own; fails (rather than hangs) past ``DEADLINE``."""
    done = threading.Event()
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="finalizer-test", daemon=True)
    thread.start()
    assert done.wait(DEADLINE), "hung: a Future's finalizer waited for a lock its thread held"
    thread.join()
    if errors:
        raise errors[0]
    return out[0] if out else None


class _GcDropper:
    """Drops one future per garbage collection (from ``gc.callbacks``),
    with a collection on almost every allocation while active."""

    def __init__(self, victims: list[Future]) -> None:
        self.victims = victims
        self.dropped = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and self.victims:
            try:
                self.victims.pop()
            except IndexError:  # another thread took the last one
                return
            self.dropped += 1

    def __enter__(self) -> _GcDropper:
        self._threshold = gc.get_threshold()
        gc.callbacks.append(self)
        gc.set_threshold(1, 1, 1)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        gc.set_threshold(*self._threshold)
        gc.callbacks.remove(self)


class _DropsOnPickling:
    """An argument whose pickling drops the last reference to a future
    (held in a reference cycle, so that only the collection frees it)."""

    def __init__(self, future: Future) -> None:
        self.cycle: list[Any] = [future]
        self.cycle.append(self.cycle)

    def __reduce__(self) -> Any:
        self.cycle = []  # the cycle with the future in it is garbage now
        gc.collect()
        return (int, (3,))


def test_sync_gc_callback_drops_futures_while_submitting(address: str) -> None:
    with Client(address) as client:
        victims = client.map(inc, range(100, 140), pure=False)
        keys = [f.key for f in victims]
        client.gather(victims)

        def work() -> list[int]:
            with _GcDropper(victims) as dropper:
                results = [client.submit(inc, i, pure=False).result() for i in range(40)]
            assert dropper.dropped == len(keys)
            return results

        assert _within_deadline(work) == list(range(1, 41))
        assert client.run_on_scheduler(_known(keys)) == []


def test_sync_reduce_drops_a_future_while_submitting(address: str) -> None:
    with Client(address) as client:
        victim = client.submit(inc, 1)
        key = victim.key
        assert victim.result() == 2
        argument = _DropsOnPickling(victim)
        del victim

        def work() -> int:
            # pickled twice (the key's hash, the task): the first drops the future
            result: int = client.submit(inc, argument).result()
            return result

        assert _within_deadline(work) == 4
        assert client.run_on_scheduler(_known([key])) == []


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_async_futures_dropped_by_gc_and_reduce_while_submitting(address: str, backend: str) -> None:
    async def main() -> None:
        async with Client(address, asynchronous=True) as client:
            victims = client.map(inc, range(200, 240), pure=False)
            keys = [f.key for f in victims]
            await client.gather(victims)
            with _GcDropper(victims) as dropper:
                results = [await client.submit(inc, i, pure=False) for i in range(40)]
            assert dropper.dropped == len(keys)
            assert results == list(range(1, 41))
            assert await client.run_on_scheduler(_known(keys)) == []

            victim = client.submit(inc, 5)
            key = victim.key
            assert await victim == 6
            argument = _DropsOnPickling(victim)
            del victim
            assert await client.submit(inc, argument) == 4
            assert await client.run_on_scheduler(_known([key])) == []

    _within_deadline(lambda: anyio.run(main, backend=backend))
