"""Values moved between workers (``get-data``) arrive as the task made them.

A task's dependencies held by another worker are fetched from it; whatever
their type, the task gets the very value (same type, same contents) it would
have got on the worker that made it. Work stealing moves tasks away from
their data all the time, so this is what keeps it safe (a dask.dataframe
shuffle's groups are a dict subclass).
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import numpy as np
import pytest

from trioclust import Client, Scheduler, Worker

pytestmark = pytest.mark.anyio


class Groups(dict):  # type: ignore[type-arg]
    """A dict subclass, as a task result (a dask shuffle's ``shuffle_group``)."""


class Point(NamedTuple):
    x: int
    y: int


class Tagged(str):
    """A str subclass."""


def make(kind: str) -> Any:
    values: dict[str, Any] = {
        "dict-subclass": Groups({0: np.arange(3), 1: "one"}),
        "ordered-dict": collections.OrderedDict(a=np.arange(2), b=[1, 2]),
        "defaultdict": collections.defaultdict(list, {"k": [np.float64(1.5)]}),
        "namedtuple": Point(1, 2),
        "list-subclass": collections.UserList([np.arange(2)]),
        "str-subclass": Tagged("tag"),
        "nested": {"n": np.arange(4), "parts": [np.arange(2), (1, 2)]},
        "bytes": b"x" * 100_000,
        "scalar": 3,
    }
    return values[kind]


def describe(value: Any) -> tuple[str, str]:
    """What the consuming task sees: the value's type and its repr."""
    return type(value).__qualname__, repr(value)


@pytest.fixture
async def two_workers() -> AsyncIterator[Client]:
    async with (
        Scheduler() as s,
        Worker(s.address, nthreads=1, name="maker"),
        Worker(s.address, nthreads=1, name="user"),
        Client(s.address, asynchronous=True) as client,
    ):
        yield client


@pytest.mark.parametrize(
    "kind",
    ["dict-subclass", "ordered-dict", "defaultdict", "namedtuple", "list-subclass",
     "str-subclass", "nested", "bytes", "scalar"],
)
async def test_a_dependency_fetched_from_a_peer_is_the_value_made(two_workers: Client, kind: str) -> None:
    client = two_workers
    made = client.submit(make, kind, workers=["maker"])
    seen = client.submit(describe, made, workers=["user"])  # must fetch it from "maker"
    assert await seen.result() == describe(make(kind))
    assert describe(await made.result()) == describe(make(kind))


@pytest.mark.parametrize("kind", ["bytes", "dict-subclass", "namedtuple", "str-subclass"])
async def test_a_result_gathered_by_the_client_is_the_value_made(two_workers: Client, kind: str) -> None:
    future = two_workers.submit(make, kind)
    assert describe(await future.result()) == describe(make(kind))
