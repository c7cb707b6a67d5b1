"""SSHCluster against real sshds in network namespaces (tests/ssh_hosts.py).

The flow is the tutorial's (Dask's docs/source/deploying-ssh.rst):
``SSHCluster(["host1", "host2", "host3"], connect_options={...},
worker_options={"nthreads": 1})``, ``Client(cluster)``, compute, scale, logs, close.
The per-host lists and the forwarded options follow the docstring of Dask's
``distributed/deploy/ssh.py``: ``connect_options`` and ``remote_python`` "if a
list it must have the same length as hosts"; ``scheduler_options`` and
``worker_options`` are keywords "to pass on to" the scheduler and the workers.
The tests that need no host (options checked before any connection) run
without root too.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import trio

from tests.ssh_hosts import SSHHosts, missing
from trioclust import Client, ClusterStartError, SSHCluster, wait
from trioclust.deploy.remote import keyword_options

pytestmark = pytest.mark.slow

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def where(x: int) -> tuple[int, str]:
    return x + 1, socket.gethostname()


def marked(x: int) -> tuple[int, str, str]:
    return x + 1, socket.gethostname(), os.environ.get("TRIOCLUST_TEST_PYTHON", "")


def environment(name: str) -> str | None:
    return os.environ.get(name)  # os.environ.get itself would pickle this process's environ


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[SSHHosts]:
    if missing() is not None:
        pytest.skip(str(missing()))
    made = SSHHosts(tmp_path)
    made.start()
    try:
        yield made
    finally:
        made.close()


def options(hosts: SSHHosts, key: Path | None = None) -> dict[str, Any]:
    return {"client_keys": str(key or hosts.key), "known_hosts": None}


def test_tutorial_flow_on_three_hosts(hosts: SSHHosts) -> None:
    names = [hosts.address[h] for h in ("h2", "h3", "h4")]
    with SSHCluster(
        names, connect_options=options(hosts), worker_options={"nthreads": 1},
        remote_python=sys.executable,
    ) as cluster:
        assert cluster.scheduler_address.startswith(f"tcp://{hosts.address['h2']}:")
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
            results = client.gather(client.map(where, range(1000)))
            assert [r[0] for r in results] == list(range(1, 1001))
            assert {r[1] for r in results} == {"h3", "h4"}
            cluster.scale(3)  # a third worker job, on h3
            client.wait_for_workers(3, timeout=30)
            assert len(client.scheduler_info()["workers"]) == 3
            logs = cluster.get_logs()
            assert "Scheduler at:" in logs["Scheduler"]
            assert len(logs) == 4
            cluster.scale(2)
            assert len(client.scheduler_info()["workers"]) == 2
    for host in ("h2", "h3", "h4"):
        assert hosts.left(host) == set(), f"processes left on {host}"


def test_refused_key_names_the_host(hosts: SSHHosts) -> None:
    started = time.monotonic()
    with pytest.raises(ClusterStartError, match=f"(?s)on {hosts.address['h2']}:.*Permission denied"):
        SSHCluster(
            [hosts.address["h2"], hosts.address["h3"]], connect_options=options(hosts, hosts.other_key),
            remote_python=sys.executable, connect_timeout=10,
        )
    assert time.monotonic() - started < 10


def test_missing_remote_python_names_the_host(hosts: SSHHosts) -> None:
    with pytest.raises(ClusterStartError, match=f"(?s)on {hosts.address['h2']}:.*(not found|No such file)"):
        SSHCluster(
            [hosts.address["h2"], hosts.address["h3"]], connect_options=options(hosts),
            remote_python="/nonexistent/python3", connect_timeout=10,
        )


def test_unreachable_host_fails_within_the_connect_timeout(hosts: SSHHosts) -> None:
    hosts.cut("h3")
    started = time.monotonic()
    with pytest.raises(ClusterStartError, match=f"workers on {hosts.address['h3']}: timed out"):
        SSHCluster(
            [hosts.address["h2"], hosts.address["h3"]], connect_options=options(hosts),
            remote_python=sys.executable, connect_timeout=3,
        )
    assert time.monotonic() - started < 3 + 8  # the timeout, and the scheduler's own close
    assert hosts.left("h2") == set()


def test_trioclust_ssh_on_the_command_line(hosts: SSHHosts) -> None:
    import json
    import signal
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-m", "trioclust.cli.main", "ssh", hosts.address["h2"], hosts.address["h4"],
         "--nworkers", "2", "--scheduler-port", "0", "--remote-python", sys.executable,
         "--ssh-private-key", str(hosts.key), "--no-host-key-check"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        address = json.loads(process.stdout.readline())["address"]
        with Client(address) as client:
            client.wait_for_workers(2, timeout=30)
            assert {r[1] for r in client.gather(client.map(where, range(20)))} == {"h4"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    assert hosts.left("h2") == hosts.left("h4") == set()


async def _until_gone(address: str, dask_scheduler: Any) -> None:
    """On the scheduler: wait until the worker at ``address`` was removed."""
    with trio.fail_after(30):
        while address in dask_scheduler.worker_links:
            await dask_scheduler._workers_changed.wait()


def test_cut_link_while_running_workers(hosts: SSHHosts) -> None:
    """The issue's "a host whose link is cut while it runs workers": the
    scheduler drops it after ``worker_ttl`` (forwarded in
    ``scheduler_options``, as Dask's deploying-ssh.rst passes
    ``scheduler_options={"port": 0, ...}``), its keys are recomputed on the
    other host, and once the link is back its worker reconnects and works."""
    names = [hosts.address[h] for h in ("h2", "h3", "h4")]
    with SSHCluster(
        names, connect_options=options(hosts), remote_python=sys.executable,
        worker_class="trioclust.Worker",
        worker_options={"nthreads": 1, "heartbeat_interval": 0.25, "reconnect_timeout": "30s"},
        scheduler_options={"worker_ttl": "2s"},
    ) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
            futures = client.map(where, range(200))
            wait(futures, timeout=30)  # held on h3 and h4; nothing fetched from h3 yet
            workers = client.scheduler_info()["workers"]
            (on_h3,) = [a for a in workers if a.startswith(f"tcp://{hosts.address['h3']}:")]
            assert workers[on_h3]["stored"] > 0
            hosts.cut("h3")
            try:
                client.run_on_scheduler(_until_gone, on_h3)
                results = client.gather(futures)
                assert [r[0] for r in results] == list(range(1, 201))
                assert {r[1] for r in results} == {"h4"}  # h3's share was recomputed there
            finally:
                hosts.cut("h3", up=True)
            client.wait_for_workers(2, timeout=30)  # h3's worker rejoins
            assert on_h3 in client.scheduler_info()["workers"]
            results = client.gather(client.map(where, range(200, 400)))
            assert [r[0] for r in results] == list(range(201, 401))
            assert {r[1] for r in results} <= {"h3", "h4"}
            assert len(cluster.workers) == 2
    for host in ("h2", "h3", "h4"):
        assert hosts.left(host) == set(), f"processes left on {host}"


def test_per_host_remote_python_and_connect_options(hosts: SSHHosts, tmp_path: Path) -> None:
    """``remote_python`` and ``connect_options`` as lists, one per host (Dask's ssh.py)."""
    wrappers = []
    for host in ("h2", "h3", "h4"):
        wrapper = tmp_path / f"python-{host}"
        wrapper.write_text(f'#!/bin/sh\nTRIOCLUST_TEST_PYTHON={host} exec {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        wrappers.append(str(wrapper))
    names = [hosts.address[h] for h in ("h2", "h3", "h4")]
    with SSHCluster(
        names, connect_options=[options(hosts)] * 3, remote_python=wrappers,
        worker_options={"nthreads": 1, "env": {"TRIOCLUST_TEST_ENV": "1"}},
    ) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
            results = client.gather(client.map(marked, range(100)))
            assert {(r[1], r[2]) for r in results} == {("h3", "h3"), ("h4", "h4")}
            assert set(client.run(environment, "TRIOCLUST_TEST_ENV").values()) == {"1"}
    # a key refused on h4 alone: the scheduler's and h3's entries are the right ones
    with pytest.raises(ClusterStartError, match=f"(?s)workers on {hosts.address['h4']}:.*Permission denied"):
        SSHCluster(
            names, connect_options=[options(hosts), options(hosts), options(hosts, hosts.other_key)],
            remote_python=sys.executable, connect_timeout=10,
        )
    for host in ("h2", "h3", "h4"):
        assert hosts.left(host) == set(), f"processes left on {host}"


def test_options_are_checked_before_connecting() -> None:
    """Lists of the wrong length and options the remote side would refuse fail
    here, at once, with no host contacted (the hosts do not exist)."""
    hosts = ["192.0.2.1", "192.0.2.2"]
    with pytest.raises(ValueError, match="remote_python is a list of 3 entries for 2 hosts"):
        SSHCluster(hosts, remote_python=["a", "b", "c"])
    with pytest.raises(ValueError, match="connect_options is a list of 1 entries for 2 hosts"):
        SSHCluster(hosts, connect_options=[{}])
    with pytest.raises(TypeError, match="one dict for all hosts"):
        SSHCluster(hosts, worker_options=[{}, {}])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"scheduler_options \['bogus'\] not understood by Scheduler"):
        SSHCluster(hosts, scheduler_options={"bogus": 1})
    with pytest.raises(TypeError, match=r"worker_options \['heartbeat_interval'\] not understood by Nanny"):
        SSHCluster(hosts, worker_options={"heartbeat_interval": 1})
    with pytest.raises(TypeError, match="as JSON"):
        SSHCluster(hosts, worker_options={"env": {"A": object()}})


def test_remote_options_parse_durations() -> None:
    assert keyword_options("") == {}
    assert keyword_options('{"worker_ttl": "500ms", "allowed_failures": 2}') == {
        "worker_ttl": 0.5, "allowed_failures": 2,
    }
    assert keyword_options('{"reconnect_timeout": 3}') == {"reconnect_timeout": 3}
    with pytest.raises(ValueError, match="JSON object"):
        keyword_options("[1]")
