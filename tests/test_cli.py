"""The command line as real processes: ``trioclust scheduler`` and ``trioclust worker``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from trioclust import Client

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


class Running:
    """A command whose stderr is read line by line (no polling), until it exits."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"read-{argv[0]}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self.lines.append("<exit>")
            self._seen.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        with self._seen:
            found: list[re.Match[str]] = []

            def match() -> bool:
                found[:] = [m for m in (re.search(pattern, line) for line in self.lines) if m]
                return bool(found) or "<exit>" in self.lines

            if not self._seen.wait_for(match, timeout) or not found:
                raise AssertionError(f"{pattern!r} not seen; output:\n" + "\n".join(self.lines))
            return found[0]

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` (None: just wait), wait for the exit, return its code."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@pytest.fixture
def scheduler() -> Iterator[Running]:
    running = Running("trioclust", "scheduler", "--port", "0", "--dashboard-address", ":0")
    yield running
    if running.proc.poll() is None:
        running.stop(signal.SIGKILL)


def test_scheduler_and_workers_from_the_command_line(scheduler: Running) -> None:
    address = scheduler.wait_for_line(r"Scheduler at: (tcp://127\.0\.0\.1:\d+)").group(1)
    workers = Running("trioclust-worker", address, "--nworkers", "auto")
    try:
        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
            assert client.submit(lambda: 1 + 1).result() == 2
            assert len(client.scheduler_info()["workers"]) == 2
        assert workers.stop() == 0
        scheduler.wait_for_line(r"Remove worker .*: worker closed")
    finally:
        if workers.proc.poll() is None:
            workers.stop(signal.SIGKILL)
    assert scheduler.stop() == 0
    assert not [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    text = "\n".join(scheduler.lines)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - trioclust\.scheduler - INFO - Scheduler at: tcp://", text, re.M)
    assert "dashboard at:" in text


def test_help_is_complete() -> None:
    for argv in (["trioclust", "--help"], ["trioclust", "scheduler", "--help"], ["trioclust-worker", "--help"]):
        out = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, check=True).stdout
        assert "usage:" in out
    out = subprocess.run([str(BIN / "trioclust"), "worker", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--scheduler-file", "--nworkers", "--nthreads", "--memory-limit", "--name", "--no-nanny", "--death-timeout"):
        assert option in out
    out = subprocess.run([str(BIN / "trioclust-scheduler"), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--host", "--port", "--dashboard-address", "--no-dashboard", "--scheduler-file"):
        assert option in out


def test_worker_with_unreachable_scheduler_says_why() -> None:
    worker = Running("trioclust", "worker", "tcp://127.0.0.1:1", "--death-timeout", "0.5")
    code = worker.stop(sig=None, timeout=60)
    assert code != 0
    assert any("tcp://127.0.0.1:1" in line for line in worker.lines)
