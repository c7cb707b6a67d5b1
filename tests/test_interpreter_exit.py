"""A script that dies of an uncaught exception still exits, promptly and quietly.

The implicit ``LocalCluster`` and the ``Client`` are closed at interpreter exit
(newest first); that must finish within the close timeout, with in-process
workers or with worker processes, and it is no lost connection.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUNS = 5  # concurrent scripts per test
EXIT_SECONDS = 10.0  # from the uncaught exception to the end of the process
START_SECONDS = 90.0  # for all of them to start their clusters, on a busy machine

SCRIPT = """
import sys, time
from trioclust import Client

client = Client({options}n_workers=1, threads_per_worker=6)
client.submit(lambda: 1)
print(time.time(), flush=True)
client.nonexistent_method
"""


@pytest.mark.parametrize("options", ["processes=False, ", ""], ids=["in-process", "processes"])
def test_an_uncaught_exception_ends_the_program(options: str, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(options=options))
    env = {
        "PATH": "/usr/bin:/bin",
        "TRIOCLUST_CONFIG": str(tmp_path / "absent.toml"),
        # the clusters start at once: each dashboard on a free port, not all racing for 8787
        "TRIOCLUST_SCHEDULER__DASHBOARD_ADDRESS": ":0",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, cwd=tmp_path,
        )
        for _ in range(RUNS)
    ]
    results = []
    try:
        start_deadline = time.monotonic() + START_SECONDS
        for proc in procs:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], start_deadline - time.monotonic())
            line = proc.stdout.readline() if ready else ""  # the moment before the exception
            if not line:
                proc.kill()
                results.append(f"did not start within {START_SECONDS} s:\n{proc.communicate()[1][-3000:]}")
                continue
            exit_deadline = float(line) + EXIT_SECONDS  # all run at once: the deadlines are absolute
            try:
                _, stderr = proc.communicate(timeout=max(0.01, exit_deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                results.append(f"did not exit within {EXIT_SECONDS} s:\n{proc.communicate()[1][-3000:]}")
                continue
            expected = "AttributeError: 'Client' object has no attribute 'nonexistent_method'"
            good = proc.returncode == 1 and expected in stderr and "Lost the connection" not in stderr
            results.append("ok" if good else f"exit code {proc.returncode}:\n{stderr[-3000:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert results == ["ok"] * RUNS, "\n\n".join(results)
