"""Dask's "Managing Computation" page (docs/source/manage-computation.rst),
each example as the page shows it, with only the import changed (the page
shows the synchronous client only). ``dd.read_csv('s3://...')`` reads local
CSV files here.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import dask
import dask.dataframe as dd
import pandas as pd
import pytest
from dask import delayed

from trioclust import Client, Future, futures_of, wait
from trioclust.testing.cluster import cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

N = 1_000


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with cluster(n_workers=2) as (address, _), Client(address) as c:
        yield c


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    return  # the module's cluster outlives single tests


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder: Path = tmp_path_factory.mktemp("csvs")
    for i in range(4):
        part = pd.DataFrame({"value": range(i * N // 4, (i + 1) * N // 4)})
        part.to_csv(folder / f"part-{i}.csv", index=False)
    return str(folder / "part-*.csv")


def test_collections_to_concrete_values(client: Client, csvs: str) -> None:
    """"Dask Collections to Concrete Values": ``.compute()`` and ``dask.compute``."""
    df = dd.read_csv(csvs)
    assert df.value.sum().compute() == sum(range(N))
    (total,) = dask.compute(df.value.sum())
    assert total == sum(range(N))


def test_client_compute_returns_one_future(client: Client, csvs: str) -> None:
    """"client.compute": a single future; ``result()`` blocks until finished."""
    df = dd.read_csv(csvs)
    total = client.compute(df.sum())  # Return a single future
    assert isinstance(total, Future)
    assert repr(total).startswith("<Future: ")
    assert total.result()["value"] == sum(range(N))  # Block until finished


def test_client_persist_points_the_collection_at_futures(client: Client, csvs: str) -> None:
    """"client.persist": the new collection's graph holds futures, one per partition."""
    df = dd.read_csv(csvs)
    persisted = client.persist(df)  # Start computation
    futures = futures_of(persisted)
    assert len(futures) == df.npartitions
    # the graph now holds the futures (and, as in Dask, aliases to them)
    graph = dict(persisted.__dask_graph__())
    assert sum(isinstance(v, Future) for v in graph.values()) == df.npartitions
    wait(persisted)
    assert all(f.status == "finished" for f in futures)
    # fast queries off the persisted collection
    assert persisted.value.sum().compute() == sum(range(N))
    assert int(persisted.value.max().compute()) == N - 1


def function(*args: int, **kwargs: int) -> int:
    return sum(args) + sum(kwargs.values())


def test_concrete_values_to_futures_and_back(client: Client) -> None:
    """"Concrete Values to Futures" and "Futures to Concrete Values"."""
    args = [1, 2, 3]
    futures = client.scatter(args)  # Send data
    assert isinstance(futures, list)
    assert all(isinstance(f, Future) for f in futures)
    future = client.submit(function, *args, x=4)  # Send single task
    assert future.result() == 10
    many = client.map(function, [1, 2, 3, 4], x=0)  # Send many tasks
    assert client.gather(many) == [1, 2, 3, 4]
    # futures as arguments link tasks together
    linked = client.submit(function, *futures, x=client.submit(function, 10))
    assert linked.result() == 16
    assert client.gather(futures) == [1, 2, 3]


def test_futures_to_dask_collections(client: Client) -> None:
    """"Futures to Dask Collections": delayed(sum)(futures) + delayed(product)(futures)."""
    futures = client.map(function, [1, 2, 3, 4])
    x = delayed(sum)(futures)
    y = delayed(math.prod)(futures)
    future = client.compute(x + y)
    assert future.result() == 10 + 24
