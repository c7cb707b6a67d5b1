"""SSHCluster against real sshds in network namespaces (tests/ssh_hosts.py).

The flow is the tutorial's (Dask's docs/source/deploying-ssh.rst):
``SSHCluster(["host1", "host2", "host3"], connect_options={...},
worker_options={"nthreads": 1})``, ``Client(cluster)``, compute, scale, logs, close.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from tests.ssh_hosts import SSHHosts, missing
from trioclust import Client, ClusterStartError, SSHCluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def where(x: int) -> tuple[int, str]:
    return x + 1, socket.gethostname()


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[SSHHosts]:
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
