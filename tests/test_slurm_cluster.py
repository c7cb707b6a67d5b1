"""SLURMCluster against a real single-node SLURM 22.05 (tests/slurm_cluster.py).

The flow is dask-jobqueue's (its docs' "Example Deployments" and the
``SLURMCluster`` docstring, dask_jobqueue/slurm.py): ``SLURMCluster(cores=,
memory=, ...)``, ``cluster.job_script()``, ``cluster.scale(jobs=10)``,
``Client(cluster)``, ``cluster.adapt(...)``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import trio

from tests.slurm_cluster import SlurmNode, missing
from trioclust import Client, ClusterStartError, SLURMCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

needs_slurm = pytest.mark.skipif(missing() is not None, reason=str(missing()))

#: short intervals so a test takes seconds
FAST: dict[str, Any] = {"poll_interval": 0.1, "interface": "lo", "scheduler_options": {"dashboard_address": None}}


def job_of(x: int) -> tuple[int, str]:
    return x + 1, os.environ.get("SLURM_JOB_ID", "")


def work(x: int) -> int:
    time.sleep(0.02)  # stands for a one-second task, scaled down
    return x + 1


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmNode]:
    node = SlurmNode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(node.conf))  # sbatch, squeue and scancel use this node
        node.start()
        try:
            yield node
        finally:
            node.close()


def test_job_script_shows_the_batch_script(tmp_path: Path) -> None:
    cluster = SLURMCluster(
        cores=8, memory="24GiB", processes=2, queue="regular", account="myaccount",
        walltime="01:00:00", job_extra_directives=["--qos=debug"],
        job_script_prologue=["source /opt/venv/bin/activate"], log_directory=tmp_path,
        worker_extra_args=["--host", "10.0.0.5"], python="/opt/venv/bin/python",
        asynchronous=True, name="demo", interface="lo",
    )
    script = cluster.job_script()
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert lines[2:13] == [
        "#SBATCH -J trioclust-worker",
        f"#SBATCH -e {tmp_path}/trioclust-worker-%J.err",
        f"#SBATCH -o {tmp_path}/trioclust-worker-%J.out",
        "#SBATCH -p regular",
        "#SBATCH -A myaccount",
        "#SBATCH -n 1",
        "#SBATCH -N 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=24G",
        "#SBATCH -t 01:00:00",
        "#SBATCH --qos=debug",
    ]
    assert lines[13] == "source /opt/venv/bin/activate"
    assert lines[14] == (
        "exec /opt/venv/bin/python -m trioclust.cli.main worker 'tcp://<scheduler-address>:<port>' "
        "--nworkers 2 --nthreads 4 --memory-limit 12884901888 --name 'demo-<job>' "
        "--death-timeout 60 --host 10.0.0.5"
    )
    assert len(lines) == 15
    assert "workers=0" in repr(cluster)


def test_job_script_options() -> None:
    cluster = SLURMCluster(
        cores=6, memory="1000MiB", job_cpu=12, job_mem="20G", walltime=None, nanny=False,
        job_directives_skip=["-N 1"], asynchronous=True, interface="lo",
    )
    script = cluster.job_script()
    assert "--cpus-per-task=12" in script
    assert "--mem=20G" in script
    assert "-N 1" not in script
    assert "-t " not in script
    assert "--nworkers 3 --nthreads 2 --memory-limit 349525333" in script
    assert "--no-nanny" in script
    assert SLURMCluster(cores=2, memory="3MB", asynchronous=True).job_script().count("--mem=3M") == 1


def test_job_script_needs_cores_and_memory() -> None:
    with pytest.raises(ValueError, match="cores=8, memory='24GiB'"):
        SLURMCluster(cores=4, asynchronous=True)
    with pytest.raises(ValueError, match="No network interface 'nope0'"):
        SLURMCluster(cores=1, memory="1GiB", interface="nope0", asynchronous=True)


@pytest.mark.slow
@needs_slurm
def test_three_jobs_compute_and_close_leaves_no_job(slurm: SlurmNode, tmp_path: Path) -> None:
    with SLURMCluster(cores=1, memory="1GiB", log_directory=tmp_path, **FAST) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert f"exec {sys.executable} -m trioclust.cli.main worker {cluster.scheduler_address}" in (
            cluster.job_script()
        )
        cluster.scale(jobs=3)  # returns once the three jobs' workers registered
        jobs = slurm.jobs()
        assert len(jobs) == 3
        assert sorted(job.job_id or "" for job in cluster.workers.values()) == sorted(jobs)
        with Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 3
            results = client.gather(client.map(job_of, range(300)))
            assert [r[0] for r in results] == list(range(1, 301))
            assert {r[1] for r in results} <= set(jobs)
            logs = cluster.get_logs()
            assert len(logs) == 4
            assert "Scheduler at:" in logs["Scheduler"]
            cluster.scale(jobs=1)  # retires the two newest, then scancels them
            assert slurm.jobs() == [cluster.workers[next(iter(cluster.workers))].job_id]
            assert len(client.scheduler_info()["workers"]) == 1
            assert client.submit(job_of, 1).result()[0] == 2
    assert slurm.jobs() == []


@pytest.mark.slow
@needs_slurm
def test_a_job_that_cannot_start_reports_slurms_reason(slurm: SlurmNode, tmp_path: Path) -> None:
    with SLURMCluster(cores=16, memory="1GiB", log_directory=tmp_path, **FAST) as cluster:
        started = time.monotonic()
        with pytest.raises(ClusterStartError, match=r"SLURM job \d+ .*PENDING with reason PartitionConfig"):
            cluster.scale(jobs=1)  # 16 CPUs on a node of 8: SLURM would keep it pending for ever
        assert time.monotonic() - started < 10
        assert slurm.jobs() == []
        assert len(cluster.workers) == 0


@pytest.mark.slow
@needs_slurm
def test_sbatch_refusing_a_job_or_a_job_that_fails_is_reported(slurm: SlurmNode, tmp_path: Path) -> None:
    with SLURMCluster(cores=1, memory="1GiB", queue="nope", log_directory=tmp_path, **FAST) as cluster:
        with pytest.raises(ClusterStartError, match=r"(?s)sbatch refused .*Invalid partition name"):
            cluster.scale(jobs=1)
    with SLURMCluster(
        cores=1, memory="1GiB", python="/nonexistent/python3", log_directory=tmp_path, **FAST,
    ) as cluster:
        with pytest.raises(ClusterStartError, match=r"(?s)it ended .*before its workers registered.*No such file"):
            cluster.scale(jobs=1)
    assert slurm.jobs() == []


@pytest.mark.slow
@needs_slurm
@pytest.mark.trio
async def test_adapt_scales_slurm_jobs_up_for_a_burst_and_back_to_the_minimum(
    slurm: SlurmNode, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioclust.adaptive")
    async with SLURMCluster(
        cores=1, memory="1GiB", log_directory=tmp_path, asynchronous=True, **FAST,
    ) as cluster:
        adaptive = await cluster.adapt(
            minimum=0, maximum=4, interval="100ms", wait_count=3, target_duration="500ms"
        )
        async with Client(cluster, asynchronous=True) as client:
            futures = client.map(work, range(200))
            with trio.fail_after(90):
                await cluster.wait_for_jobs(4)
                assert len(slurm.jobs()) == 4
                assert await client.gather(futures) == [x + 1 for x in range(200)]
                del futures
                await cluster.wait_for_jobs(0)
        assert slurm.jobs() == []
        assert adaptive.log[-1].target == 0
        messages = [r.getMessage() for r in caplog.records if r.name == "trioclust.adaptive"]
        assert any(m.startswith("adaptive: up (target 4") for m in messages)
        assert any(m.startswith("adaptive: down") for m in messages)


@pytest.mark.slow
@needs_slurm
@pytest.mark.trio
async def test_adapt_logs_a_job_that_cannot_start_and_keeps_serving(
    slurm: SlurmNode, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    async with SLURMCluster(
        cores=16, memory="1GiB", processes=1, log_directory=tmp_path, asynchronous=True, **FAST,
    ) as cluster:
        adaptive = await cluster.adapt(minimum=0, maximum=1, interval="1h")  # steps by hand below
        async with Client(cluster, asynchronous=True) as client:
            future = client.submit(work, 1)
            await client.scheduler_info()  # after the submission, on the same link
            await adaptive.step()
            assert cluster.workers == {}
            assert slurm.jobs() == []
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert any("could not scale up" in m and "PartitionConfig" in m for m in errors)
            assert cluster.status == "running"
            del future
