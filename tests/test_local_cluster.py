"""LocalCluster and Client() discovery: Dask's tutorial flow with trioclust names."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator

import cloudpickle
import psutil
import pytest

from trioclust import Client, LocalCluster
from trioclust.deploy.sizing import workers_and_threads
from trioclust.sizes import parse_bytes

pytestmark = pytest.mark.slow

# worker processes cannot import this test module: send its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inc(x: int) -> int:
    return x + 1


@pytest.fixture
def no_configured_scheduler(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.delenv("TRIOCLUST_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("TRIOCLUST_CONFIG", str(tmp_path) + "/absent.toml")


def test_tutorial_flow() -> None:
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    try:
        text = repr(cluster)
        assert "LocalCluster(" in text
        assert cluster.scheduler_address in text
        assert "workers=2" in text
        assert cluster.dashboard_link is not None
        assert cluster.dashboard_link in text
        assert cluster.dashboard_link in cluster._repr_html_()
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as page:
            assert page.status == 200
            assert "<html" in page.read().decode().lower()
        logs = cluster.get_logs()
        assert "Scheduler at:" in logs["Scheduler"]
        workers = [a for a in logs if a != "Scheduler"]
        assert len(workers) == 2
        assert all("registered with" in logs[a] for a in workers)
        client = Client(cluster)
        assert client.submit(inc, 1).result() == 2
        cluster.scale(1)
        assert len(client.scheduler_info()["workers"]) == 1
        cluster.scale(3)
        cluster.wait_for_workers(3)
        assert len(client.scheduler_info()["workers"]) == 3
        assert client.gather(client.map(inc, range(10))) == list(range(1, 11))
        pids = [p.pid for p in psutil.Process().children(recursive=True)]
        assert len(pids) == 3
        client.close()
    finally:
        cluster.close()
    assert not [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


def test_scale_down_keeps_data() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            futures = client.map(inc, range(20))
            assert client.gather(futures) == list(range(1, 21))
            cluster.scale(1)
            assert client.gather(futures) == list(range(1, 21))


def test_in_process_workers_on_inproc() -> None:
    with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("inproc://")
        with Client(cluster) as client:
            assert client.submit(inc, 41).result() == 42
            assert set(cluster.get_logs()) == {"Scheduler", *client.scheduler_info()["workers"]}


def test_second_client_by_address_reaches_an_in_process_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    # the second client runs its own loop: inproc:// connects across the two
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        monkeypatch.setenv("TRIOCLUST_SCHEDULER_ADDRESS", cluster.scheduler_address)
        with Client(cluster) as first, Client() as second:
            assert second.scheduler_address == cluster.scheduler_address
            assert second.submit(inc, 1).result() == 2
            data = second.scatter(list(range(100)))
            assert sum(second.gather(second.map(inc, data))) == sum(range(1, 101))
            assert first.submit(inc, 41).result() == 42


@pytest.fixture
def in_process_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        yield cluster


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_asynchronous_client_reaches_an_in_process_cluster_from_its_loop(
    in_process_cluster: LocalCluster, anyio_backend: str
) -> None:
    async with Client(in_process_cluster.scheduler_address, asynchronous=True) as client:
        assert await client.submit(inc, 1) == 2
        assert await client.gather(client.map(inc, range(10))) == list(range(1, 11))


async def test_asynchronous_cluster_under_trio() -> None:
    async with LocalCluster(n_workers=1, processes=False, asynchronous=True, dashboard_address=None) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            assert await client.submit(inc, 1) == 2
            await cluster.scale(2)
            assert len((await client.scheduler_info())["workers"]) == 2


test_asynchronous_cluster_under_trio = pytest.mark.trio(test_asynchronous_cluster_under_trio)


def test_asynchronous_cluster_under_asyncio() -> None:
    import asyncio

    async def main() -> int:
        async with LocalCluster(n_workers=1, processes=False, asynchronous=True, dashboard_address=None) as cluster:
            async with Client(cluster, asynchronous=True) as client:
                await cluster.scale(2)
                return int(await client.submit(inc, 1))

    assert asyncio.run(main()) == 2


def test_client_uses_the_address_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalCluster(n_workers=1, dashboard_address=None) as cluster:
        monkeypatch.setenv("TRIOCLUST_SCHEDULER_ADDRESS", cluster.scheduler_address)
        with Client() as client:
            assert client.cluster is None
            assert client.scheduler_address == cluster.scheduler_address
            assert client.submit(inc, 1).result() == 2


def test_client_uses_the_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    with LocalCluster(n_workers=1, dashboard_address=None) as cluster:
        path = f"{tmp_path}/config.toml"
        with open(path, "w") as f:
            f.write(f'scheduler-address = "{cluster.scheduler_address}"\n')
        monkeypatch.delenv("TRIOCLUST_SCHEDULER_ADDRESS", raising=False)
        monkeypatch.setenv("TRIOCLUST_CONFIG", path)
        with Client() as client:
            assert client.scheduler_address == cluster.scheduler_address


@pytest.mark.usefixtures("no_configured_scheduler")
def test_client_without_address_starts_and_owns_a_local_cluster() -> None:
    with Client(n_workers=1, processes=False, dashboard_address=None) as client:
        assert isinstance(client.cluster, LocalCluster)
        assert client.submit(inc, 1).result() == 2
    assert client.cluster.status == "closed"


@pytest.mark.usefixtures("no_configured_scheduler")
def test_client_keyword_arguments_are_for_the_cluster_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOCLUST_SCHEDULER_ADDRESS", "tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="LocalCluster options"):
        Client(n_workers=2)


def test_sizing_follows_dask() -> None:
    assert workers_and_threads(2, None, None, processes=True) == (2, 1)
    assert workers_and_threads(16, None, None, processes=True) == (4, 4)
    assert workers_and_threads(12, None, None, processes=True) == (4, 3)
    assert workers_and_threads(8, None, None, processes=False) == (1, 8)
    assert workers_and_threads(8, 2, None, processes=True) == (2, 4)
    assert workers_and_threads(8, None, 2, processes=True) == (4, 2)
    assert parse_bytes("4GiB") == 4 * 2**30
    assert parse_bytes("500 MB") == 500 * 10**6
    with pytest.raises(ValueError, match="'lots'"):
        parse_bytes("lots")


def test_dashboard_port_in_use_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trioclust")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with contextlib.ExitStack() as stack:
            with pytest.warns(UserWarning, match=f"Port {port} is already in use") as record:
                cluster = stack.enter_context(
                    LocalCluster(n_workers=1, processes=False, dashboard_address=f":{port}")
                )
            link = cluster.dashboard_link
            assert link is not None
            assert f":{port}/" not in link
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any(str(port) in w and link in w for w in warnings), warnings
            # the loop thread's warning reaches the caller, naming the new port
            served = urllib.parse.urlsplit(link).port
            assert any(f"on port {served} instead" in str(w.message) for w in record)
            with urllib.request.urlopen(link, timeout=30) as page:
                assert page.status == 200
            with urllib.request.urlopen(link.replace("/status", "/health"), timeout=30) as page:
                assert page.read() == b"ok"
