"""The benchmark runner works: a tiny run of every scenario, trioclust only (no dask needed).

The figures mean nothing at this size; what is checked is that each scenario
runs to the end with correct results (the scenarios assert their sums), that
the table and the JSON come out, and that every process the run started is
gone when it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
SCENARIOS = "abcdefghij"


@pytest.mark.timeout(300)
def test_tiny_run_of_every_scenario_for_trioclust(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(RUNNER), "--tiny", "--no-dask", "--json", str(figures)],
        capture_output=True, text=True, timeout=280, check=False,
    )
    assert done.returncode == 0, f"the runner failed:\n{done.stdout}\n{done.stderr}"

    document = json.loads(figures.read_text())
    assert document["errors"] == []
    assert document["stray_processes"] == []
    assert "dask" not in document["versions"]
    assert set(document["results"]) == set(SCENARIOS)
    for letter in SCENARIOS:
        systems = set(document["results"][letter])
        assert systems == ({"raw"} if letter == "h" else {"trioclust"}), (letter, systems)
    assert document["results"]["b"]["trioclust"]["median_us"] > 0
    assert document["results"]["e"]["trioclust"]["mb_per_s"] > 0
    raw = document["results"]["h"]["raw"]
    assert raw["loop_ping_pong"]["median_us"] > 0
    parts = (2 * raw["ping_pong"]["median_us"], 1.5 * raw["thread_ping_pong"]["median_us"])
    assert all(part > 0 for part in parts)
    assert raw["handoff_floor_us"] == pytest.approx(sum(parts))
    ucx = document["results"]["i"]["trioclust"]  # ucx against tcp, or why it was skipped
    assert "skipped" in ucx or (ucx["ucx"]["mb_per_s"] > 0 and ucx["tcp"]["mb_per_s"] > 0)

    rows = {row["scenario"]: row for row in document["rows"]}
    assert any(name.startswith("c  gather(map)") for name in rows)
    assert all(row["dask"] is None for row in rows.values())
    # the table on stdout has a line per row
    for name in rows:
        assert name in done.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("watcher", ["http", "chromium"])
def test_tiny_run_of_the_dashboard_overhead_benchmark(watcher: str) -> None:
    if watcher == "chromium" and not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium package (/usr/bin/chromium)")
    script = RUNNER.parent / "dashboard_overhead.py"
    done = subprocess.run(
        [sys.executable, str(script), "--rounds", "2", "--tasks", "300", "--watcher", watcher],
        capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, f"the benchmark failed:\n{done.stdout}\n{done.stderr}"
    assert "watched/plain per round: median" in done.stdout
    assert "CPU per task, cluster and watcher" in done.stdout
    assert "the watcher while watching" in done.stdout
