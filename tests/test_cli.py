"""The command line as real processes: ``trioclust scheduler`` and ``trioclust worker``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    for option in ("--scheduler-file", "--nworkers", "--nthreads", "--memory-limit", "--name", "--no-nanny", "--death-timeout", "--tls-ca-file", "--tls-cert", "--tls-key"):
        assert option in out
    out = subprocess.run([str(BIN / "trioclust-scheduler"), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--host", "--port", "--dashboard-address", "--no-dashboard", "--scheduler-file", "--protocol", "--tls-ca-file", "--tls-cert", "--tls-key"):
        assert option in out


def test_worker_with_unreachable_scheduler_says_why() -> None:
    worker = Running("trioclust", "worker", "tcp://127.0.0.1:1", "--death-timeout", "0.5")
    code = worker.stop(sig=None, timeout=60)
    assert code != 0
    assert any("tcp://127.0.0.1:1" in line for line in worker.lines)


def _write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_scheduler_and_worker_with_tls_certificate_files(tmp_path: Path) -> None:
    from trioclust import Security

    made = Security.temporary()
    ca = _write_private(tmp_path / "ca.pem", str(made.tls_ca_file))
    cert = _write_private(tmp_path / "cert.pem", str(made.tls_scheduler_cert))
    key = _write_private(tmp_path / "key.pem", str(made.tls_scheduler_key))
    tls = ["--tls-ca-file", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]
    security = Security(tls_ca_file=str(ca), tls_client_cert=str(cert), tls_client_key=str(key))
    run_scheduler_and_worker("tls", tls, tls, security)


def run_scheduler_and_worker(
    scheme: str, scheduler_options: list[str], worker_options: list[str], security: Any = None
) -> None:
    """``trioclust scheduler`` and one ``trioclust worker`` over ``scheme``: a Client
    computes through them, the worker leaves with exit code 0, so does the scheduler."""
    scheduler = Running("trioclust", "scheduler", "--port", "0", "--no-dashboard", *scheduler_options)
    workers: Running | None = None
    try:
        pattern = rf"Scheduler at: ({scheme}://127\.0\.0\.1:\d+)"
        address = scheduler.wait_for_line(pattern).group(1)
        workers = Running("trioclust", "worker", address, "--nworkers", "1", "--nthreads", "1", *worker_options)
        with Client(address, security=security) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(lambda: 1 + 1).result() == 2
            assert [w.startswith(f"{scheme}://") for w in client.scheduler_info()["workers"]] == [True]
        assert workers.stop() == 0
    finally:
        if workers is not None and workers.proc.poll() is None:
            workers.stop(signal.SIGKILL)
        if scheduler.proc.poll() is None:
            assert scheduler.stop() == 0


def test_tls_options_that_do_not_fit_say_why(tmp_path: Path) -> None:
    import argparse

    from trioclust.cli.tls_options import protocol_and_security

    def args(**kwargs: object) -> argparse.Namespace:
        values: dict[str, object] = {"protocol": None, "tls_ca_file": None, "tls_cert": None, "tls_key": None}
        return argparse.Namespace(**{**values, **kwargs})

    assert protocol_and_security(args(), role="scheduler") == (None, None)
    with pytest.raises(SystemExit, match="--protocol tls needs --tls-ca-file, --tls-cert and --tls-key"):
        protocol_and_security(args(protocol="tls"), role="scheduler")
    missing = tmp_path / "nope.pem"
    with pytest.raises(SystemExit, match="No such file"):
        protocol_and_security(args(tls_ca_file=missing, tls_cert=missing), role="worker")
    with pytest.raises(SystemExit, match="use --protocol wss"):
        protocol_and_security(args(protocol="ws", tls_ca_file=missing, tls_cert=missing), role="worker")
    with pytest.raises(SystemExit, match=r"--protocol ucx is not encrypted.*use --protocol tls"):
        protocol_and_security(args(protocol="ucx", tls_ca_file=missing, tls_cert=missing), role="worker")
    ca = _write_private(tmp_path / "ca.pem", "x")
    protocol, security = protocol_and_security(args(tls_ca_file=ca, tls_cert=ca), role="worker")
    assert protocol == "tls"
    assert security is not None
    assert security.tls_worker_cert == str(ca)
    assert security.require_encryption
