"""``NannyPlugin``: code run in the nanny process, with Dask's semantics, and
``unregister_worker_plugin`` (Dask's "Plugins" page, docs/source/plugins.rst,
"Nanny Plugins"; its built-in ``Environ`` plugin is the example used here).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import cloudpickle
import pytest

from trioclust import Client, Nanny, NannyPlugin, Scheduler, Worker, WorkerPlugin

pytestmark = pytest.mark.anyio

# worker processes cannot import this module: its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Environ(NannyPlugin):
    """Dask's ``distributed.diagnostics.plugin.Environ``: environment variables
    for the worker processes, which need a restart to see them."""

    restart = True

    def __init__(self, environ: dict[str, Any] | None = None) -> None:
        self.environ = {k: str(v) for k, v in (environ or {}).items()}

    async def setup(self, nanny: Any) -> None:
        nanny.env.update(self.environ)
        nanny.env["ENVIRON_SETUPS"] = str(int(nanny.env.get("ENVIRON_SETUPS", 0)) + 1)  # for the test

    def teardown(self, nanny: Any) -> None:
        for key in self.environ:
            nanny.env.pop(key, None)


class Failing(NannyPlugin):
    def setup(self, nanny: Any) -> None:
        raise OSError("no such device")


class Recorder(WorkerPlugin):
    def setup(self, worker: Any) -> None:
        worker.recorded = ["setup"]

    def teardown(self, worker: Any) -> None:
        worker.recorded.append("teardown")


def getenv(name: str) -> str | None:
    return os.environ.get(name)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Client, Scheduler, Nanny, Worker]]:
    async with (
        Scheduler() as s,
        Nanny(s.address, name="nannied") as nanny,
        Worker(s.address, name="plain") as plain,
        Client(s.address, asynchronous=True) as client,
    ):
        yield client, s, nanny, plain


async def test_environ_nanny_plugin_restarts_the_worker_with_its_environment(cluster: Any) -> None:
    client, _s, nanny, _plain = cluster
    var = f"TRIOCLUST_TEST_{uuid.uuid4().hex[:8].upper()}"
    pid = nanny.worker_pid
    replies = await client.register_plugin(Environ({var: 123}), name="environ")
    assert replies == {nanny.worker_address: "OK"}  # the plain worker has no nanny
    assert nanny.env[var] == "123"
    assert set(nanny.plugins) == {"environ"}
    await nanny.wait_for_worker(pid_not=pid)  # restart = True: a fresh process
    await client.wait_for_workers(2)
    assert await client.submit(getenv, var, workers=["nannied"], pure=False) == "123"
    assert nanny.restarts == 1

    # the new worker passed the plugin on again as it registered: the nanny
    # holds it already, so no second setup and no second restart (the
    # unregistering below reaches the nanny after that, on the same pipe)

    assert await client.unregister_worker_plugin("environ", nanny=True) == {nanny.worker_address: "OK"}
    assert nanny.restarts == 1
    assert nanny.env["ENVIRON_SETUPS"] == "1"
    assert var not in nanny.env
    assert nanny.plugins == {}
    with pytest.raises(ValueError, match="unknown nanny plugin 'environ'"):
        await client.unregister_worker_plugin("environ", nanny=True)


async def test_a_nanny_that_joins_later_gets_the_plugin_and_tears_it_down_on_close(cluster: Any) -> None:
    client, s, nanny, _ = cluster

    class Marker(NannyPlugin):
        def setup(self, nanny: Any) -> None:
            nanny.env["SETUPS"] = str(int(nanny.env.get("SETUPS", 0)) + 1)

        def teardown(self, nanny: Any) -> None:
            nanny.env["TEARDOWNS"] = str(int(nanny.env.get("TEARDOWNS", 0)) + 1)

    marker = Marker()
    await client.register_plugin(marker, name="marker")
    async with Nanny(s.address, name="late") as late:
        await client.wait_for_workers(3)
        # its worker passed the plugin on as it registered; registering the
        # plugin again waits behind that (a nanny answers in order), and
        # a nanny holding it already does not set it up twice
        # same plugin again waits behind that (a nanny answers in order); it
        # is a new registration, so it replaces the plugin (as in Dask)
        replies = await client.register_plugin(marker, name="marker")
        assert replies == {nanny.worker_address: "OK", late.worker_address: "OK"}
        assert late.env["SETUPS"] == "2"  # once as it joined, once now
        assert late.env["TEARDOWNS"] == "1"
        assert set(late.plugins) == {"marker"}
    assert late.env["TEARDOWNS"] == "2"  # and as it closed
    assert late.plugins == {}


async def test_a_nanny_plugin_setup_error_is_raised(cluster: Any) -> None:
    client, _, nanny, _ = cluster
    with pytest.raises(RuntimeError, match="no such device"):
        await client.register_plugin(Failing(), name="failing")
    assert nanny.plugins == {}


async def test_unregister_worker_plugin_tears_it_down_on_every_worker(cluster: Any) -> None:
    client, _, _, plain = cluster
    await client.register_plugin(Recorder(), name="recorder")
    assert plain.recorded == ["setup"]
    replies = await client.unregister_worker_plugin("recorder")
    assert set(replies.values()) == {"OK"}
    assert len(replies) == 2
    assert plain.recorded == ["setup", "teardown"]
    assert "recorder" not in plain.plugins
    with pytest.raises(ValueError, match="unknown worker plugin 'recorder'"):
        await client.unregister_worker_plugin("recorder")


def test_nanny_plugin_under_the_sync_client() -> None:
    """The same, from a plain script (the sync client and a process cluster)."""
    from trioclust import LocalCluster

    var = f"TRIOCLUST_TEST_{uuid.uuid4().hex[:8].upper()}"
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        (address,) = client.register_plugin(Environ({var: "x"}))
        client.wait_for_workers(1)
        # the restarted worker has a new address: wait until it is the one here
        while client.submit(getenv, var, pure=False).result() != "x":
            client.wait_for_workers(1)
        assert address
