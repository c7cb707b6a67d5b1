"""Worker memory limits that hold (issue 18): spill to disk, pause, terminate.

Worker processes under nannies (LocalCluster with processes), so that the RSS
the monitors measure is the worker's own. Task functions are made inside the
tests: cloudpickle sends them by value to the worker processes.
"""

from __future__ import annotations

import time

import pytest

from trioclust import Client, KilledWorker, LocalCluster, wait
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
        store.target = 40  # less room: the least recently used goes at once
        assert store.memory_bytes == 40
        assert store.spilled_bytes == 160
        store.target = 100
        assert store.evict(50) == 40
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


def test_24_results_of_40_mib_spill_on_a_300_mib_worker_and_all_come_back() -> None:
    """Issue 18's spill case: 24 results of 40 MiB kept on a 300 MiB worker.
    They are all retrievable, the worker's RSS stays under the limit all along
    (measured here every few ms, and the nanny would have restarted it past
    95%), and scheduler_info() shows the spilled bytes."""
    import os
    import threading

    import psutil

    def make(i: int) -> bytes:
        return bytes([i]) * (40 * MiB)

    with (
        LocalCluster(  # two threads: two results being made while others spill
            n_workers=1, threads_per_worker=2, memory_limit="300MiB", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        (pid,) = client.run(os.getpid).values()
        worker = psutil.Process(pid)
        peak = 0
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.wait(0.003):
                try:
                    peak = max(peak, worker.memory_info().rss)
                except psutil.Error:
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            futures = client.map(make, range(24))
            wait(futures, timeout=60)
            metrics = _worker_info(client)["metrics"]
            assert isinstance(metrics, dict)
            assert metrics["spilled"] >= 10 * 40 * MiB
            assert metrics["spilled_count"] >= 10
            for i, f in enumerate(futures):
                value = f.result(timeout=30)
                assert len(value) == 40 * MiB
                assert value[0] == value[-1] == i
        finally:
            done.set()
            watcher.join()
        (again,) = client.run(os.getpid).values()
        assert again == pid  # never restarted
        assert peak < 300 * MiB * 0.95


def test_deleting_or_looking_up_a_spilled_key_does_not_read_its_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import zict

    store = SpillStore(0)
    try:
        store["k"] = b"x" * 1000
        assert store.spilled_count == 1

        def no_read(self: object, key: str) -> bytes:
            raise AssertionError(f"read {key} from disk")

        monkeypatch.setattr(zict.File, "__getitem__", no_read)
        assert "k" in store
        del store["k"]
        assert store.spilled_bytes == 0
        assert "k" not in store
    finally:
        store.close()


def test_small_values_stay_in_memory_up_to_a_hundredth_of_target() -> None:
    from trioclust.runtime.spill import SMALL

    store = SpillStore(100 * SMALL)  # room for one SMALL value outside zict
    try:
        store.expect_size("a", SMALL)
        store["a"] = 1
        store.expect_size("b", SMALL)
        store["b"] = 2  # over the budget: zict's, spillable
        assert store.memory_bytes == 2 * SMALL
        assert store.evict(10**9) == SMALL  # only "b" can go
        assert store.memory_bytes == SMALL
        assert store.spilled_count == 1
        assert (store["a"], store["b"]) == (1, 2)
        assert sorted(store) == ["a", "b"]
        store["a"] = 3  # replaced: its size is measured again
        assert store["a"] == 3
        del store["a"]
        del store["b"]
        assert len(store) == 0
        assert store.memory_bytes == 0
    finally:
        store.close()
