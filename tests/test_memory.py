"""Worker memory limits that hold (issue 18): spill to disk, pause, terminate.

Worker processes under nannies (LocalCluster with processes), so that the RSS
the monitors measure is the worker's own. Task functions are made inside the
tests: cloudpickle sends them by value to the worker processes.
"""

from __future__ import annotations

import time

import pytest

from trioclust import Client, KilledWorker, LocalCluster
from trioclust.runtime.spill import SpillStore

pytestmark = pytest.mark.slow

MiB = 2**20


def _worker_info(client: Client) -> dict[str, object]:
    (info,) = client.scheduler_info()["workers"].values()
    return info


def test_spill_store_keeps_target_bytes_in_memory_and_reads_back_from_disk() -> None:
    store = SpillStore(100)
    try:
        for i in range(5):
            store.expect_size(f"k{i}", 40)
            store[f"k{i}"] = bytes([i]) * 40
        assert store.memory_bytes == 80  # the two most recent
        assert store.spilled_bytes == 120
        assert store.spilled_count == 3
        assert store["k0"] == bytes([0]) * 40  # read back, least recently used goes out
        assert store.memory_bytes == 80
        assert store.spilled_bytes == 120
        assert store.evict(50) == 80
        assert store.memory_bytes == 0
        del store["k0"]
        assert store.spilled_bytes == 160
        store["obj"] = {"a": [1, 2]}
        store.evict(10**9)
        assert store["obj"] == {"a": [1, 2]}
        assert len(store) == 5
    finally:
        store.close()
    import os

    assert not os.path.exists(store.directory)


def test_a_worker_over_pause_gets_no_new_tasks_until_it_is_back_under() -> None:
    """Pause at 80%: a task holding memory pauses its worker; queued tasks
    wait, and run once that memory is freed."""
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, memory_limit="300MiB", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):

        def hog() -> int:
            import gc
            import os
            import time as t

            blob = bytearray(os.urandom(1)) * (215 * MiB)  # with the interpreter ~84% of the limit
            path = os.environ.get("TRIOCLUST_TEST_RELEASE", "")
            deadline = t.monotonic() + 30
            while not os.path.exists(path) and t.monotonic() < deadline:
                t.sleep(0.02)
            del blob
            gc.collect()
            return 1

        import tempfile
        from pathlib import Path

        release = Path(tempfile.mkdtemp()) / "release"
        client.run(lambda: __import__("os").environ.__setitem__("TRIOCLUST_TEST_RELEASE", str(release)))
        h = client.submit(hog)
        deadline = time.monotonic() + 20
        while _worker_info(client)["status"] != "paused":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        later = client.submit(lambda: 2)
        time.sleep(0.5)  # the paused worker must not start it meanwhile
        assert client.scheduler_info()["workers"]
        assert not later.done()
        release.touch()
        assert h.result(timeout=30) == 1
        assert later.result(timeout=30) == 2
        assert _worker_info(client)["status"] == "running"
        release.unlink()
        release.parent.rmdir()


def test_a_task_past_terminate_is_killed_worker_after_three_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Terminate at 95%: the nanny kills the worker, a new one starts, the task
    is tried again; the third death ends it as KilledWorker naming memory."""
    monkeypatch.setenv("TRIOCLUST_SCHEDULER__ALLOWED_FAILURES", "2")

    def grow() -> int:
        import time as t

        chunks = []
        for _ in range(150):  # 4 MiB a step: a few monitor ticks from pause to terminate
            chunks.append(bytearray(4 * MiB))
            for j in range(0, len(chunks[-1]), 4096):
                chunks[-1][j] = 1
            t.sleep(0.03)
        return len(chunks)

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, memory_limit="300MiB", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        f = client.submit(grow)
        with pytest.raises(KilledWorker, match="memory") as info:
            f.result(timeout=60)
        assert "3 workers" in str(info.value)
        assert client.submit(lambda: 5).result(timeout=30) == 5  # a new worker serves
