"""The nanny: runs one worker in a child process, restarts it when it dies, stops it on close.

Theory of operation
-------------------

:meth:`Nanny.serve` is a loop, one turn per worker process. Each turn opens the
process (``python -m trioclust.runtime.worker_process``; the protocol over the
three pipes is :mod:`trioclust.runtime.process_control`'s) and a nursery that
owns two readers:

* the *control reader* reads stdout, one JSON object per line: the child's
  ``{"address", "pid"}`` when it serves, and ``{"close_reason"}`` when it
  stopped by itself. End of file on stdout means the child is gone (it holds
  the only copy of that pipe; its fd 1 points at stderr).
* the *log reader* forwards stderr lines to the ``trioclust.nanny`` logger at
  the level the child logged them, prefixed with the worker's name and pid,
  and keeps the last :data:`RECENT_LOG_LINES` in :attr:`Nanny.recent_logs`.

The turn waits for the address (``nanny.start-timeout``), publishes it, then
waits for the process to exit. Whatever ends the wait (exit, :meth:`Nanny.close`,
an outer cancellation, an error), the turn's ``finally`` stops the process in a
shielded, bounded escalation: write ``close`` and close stdin, wait
``nanny.close-timeout``; SIGTERM, wait ``nanny.terminate-timeout``; SIGKILL and
wait. The readers run in shielded scopes of their own, so that the child's last
log lines are still forwarded while it shuts down; once it has exited they get
:data:`_PIPE_DRAIN_SECONDS` to reach end of file (a grandchild may hold a pipe
open) and are then cancelled, and every pipe is closed. The process is always
reaped.

While a worker serves and ``memory_limit`` is set, the nanny measures its
RSS every ``worker.memory.monitor-interval`` and kills it past
``worker.memory.terminate`` (:mod:`trioclust.core.memory_policy` decides);
the loop below then starts a new one.

After a turn, the loop decides: closing -> return; the child exited with
``EXIT_SCHEDULER_LOST`` (it stopped by itself: it lost its scheduler, or the
scheduler retired it) -> set :attr:`Nanny.close_reason` and return; the
first child never reported its address -> raise :class:`WorkerStartError`;
anything else -> log a warning and start a new child, after
``nanny.restart-backoff`` seconds if the last one lived less than
:data:`_QUICK_DEATH_SECONDS` or never started.

:meth:`Nanny.close` marks the nanny closing and cancels the loop's scope; the
escalation above does the rest. Children run in their own process group, so a
Ctrl-C at a terminal reaches the nanny alone and the nanny stops its child
(instead of racing to restart a child that the same Ctrl-C stopped).

The nanny is a :class:`~trioclust.runtime.server.Server`: under asyncio,
``async with Nanny(...)`` runs :meth:`Nanny.serve` in a trio loop on a thread
of its own, and :meth:`Nanny.close`, :meth:`Nanny.wait_closed` and
:meth:`Nanny.wait_for_worker` may be awaited from the asyncio side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from subprocess import PIPE
from typing import TYPE_CHECKING, Any

import psutil
import sniffio
import trio

from trioclust import config
from trioclust.core.memory_policy import MemoryPolicy
from trioclust.errors import NannyClosedError, WorkerStartError
from trioclust.runtime.nanny_plugins import NannyPlugins
from trioclust.runtime.process_control import CLOSE_COMMAND, EXIT_STOPPED_BY_ITSELF
from trioclust.runtime.resources import format_resources, parse_resources
from trioclust.runtime.server import Server
from trioclust.runtime.spill import memory_thresholds

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = ["RECENT_LOG_LINES", "Nanny", "NannyClosedError", "WorkerStartError"]

logger = logging.getLogger("trioclust.nanny")

RECENT_LOG_LINES = 200
"""How many of the worker's stderr lines :attr:`Nanny.recent_logs` keeps."""

_START_ERROR_LINES = 20  # the child's last stderr lines quoted in a WorkerStartError
_QUICK_DEATH_SECONDS = 1.0  # a child dying younger than this is restarted after a backoff
_PIPE_DRAIN_SECONDS = 1.0  # after the child exited, how long its pipes may take to reach EOF
_MAX_LINE_BYTES = 64 * 1024  # a longer line is cut into pieces rather than buffered whole
_DEFAULT_WORKER_MODULE = "trioclust.runtime.worker_process"
_LEVEL_IN_LINE = re.compile(r" - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")


class _LineSplitter:
    """Cuts a byte stream into lines, without ever buffering more than one long line."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        while len(self._buffer) > _MAX_LINE_BYTES:
            lines.append(self._buffer[:_MAX_LINE_BYTES])
            self._buffer = self._buffer[_MAX_LINE_BYTES:]
        return lines

    def flush(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        return [rest] if rest else []


@dataclass(eq=False)
class _Child:
    """One worker process and what the readers learned about it."""

    process: trio.Process
    label: str
    started_at: float
    announced: trio.Event = field(default_factory=trio.Event)  # address read, or stdout closed
    stdout_done: trio.Event = field(default_factory=trio.Event)
    stderr_done: trio.Event = field(default_factory=trio.Event)
    address: str | None = None
    close_reason: str | None = None
    timed_out: bool = False
    last_lines: deque[str] = field(default_factory=lambda: deque(maxlen=_START_ERROR_LINES))
    # nanny-plugin requests read from stdout, carried out while the worker serves
    plugin_requests: list[dict[str, Any]] = field(default_factory=list)
    plugin_requested: trio.Event = field(default_factory=trio.Event)


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Nanny(Server):
    """Runs a worker in a child process and restarts it whenever it dies.

    Use it as an async context manager (under trio, or under asyncio, where it
    runs on a thread of its own), or start :meth:`serve` in a nursery::

        async with Nanny("tcp://127.0.0.1:8786", nthreads=4) as nanny:
            print(nanny.worker_address)

        async with trio.open_nursery() as nursery:
            nanny = Nanny("tcp://127.0.0.1:8786")
            await nursery.start(nanny.serve)
            ...
            await nanny.close()

    The child is restarted when it exits for any reason but a close the nanny
    asked for; when it stopped by itself (it lost its scheduler, or the
    scheduler told it to close), the nanny stops too and says why in
    :attr:`close_reason`.

    Args:
        scheduler_address: where the worker registers, e.g. ``"tcp://10.0.0.1:8786"``.
        nthreads: threads the worker runs tasks on.
        name: the worker's name; the scheduler uses its address when ``None``.
        memory_limit: the worker's memory limit in bytes; 0 for none.
        host: the interface the worker listens on; the worker's default when ``None``.
        reconnect_timeout: how long the worker tries to reach a lost scheduler
            before it gives up, seconds; ``worker.reconnect-timeout`` when ``None``.
        env: environment variables set for the worker, on top of this process's.
        resources: the worker's resources, ``{"GPU": 2}`` or ``"GPU=2"`` (see
            :class:`~trioclust.Worker`).
        security: the :class:`~trioclust.Security` the worker uses. It travels
            to each worker process as one line on the process's stdin, read
            before anything else: private keys never touch the disk or the
            process's command line or environment (which other processes
            of the same user can read), and nothing is left behind if the
            nanny is killed.
        _worker_module: private, for tests: the module run with ``python -m``
            instead of ``trioclust.runtime.worker_process``. It gets the same
            arguments and must speak the same pipe protocol.

    Attributes:
        worker_address: the current worker's address; ``None`` while no worker serves.
        worker_pid: the current worker process's pid; ``None`` while no worker serves.
        restarts: how many worker processes were started after the first.
        close_reason: why the nanny stopped by itself (its worker lost the
            scheduler, or was told to close by it); ``None`` otherwise.
        recent_logs: the workers' last stderr lines, oldest first, as they wrote them.
        status: ``"created"``, ``"running"`` once the first worker serves,
            ``"closing"``, ``"closed"``.
    """

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int = 1,
        name: str | None = None,
        memory_limit: int = 0,
        host: str | None = None,
        reconnect_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        security: Security | None = None,
        resources: dict[str, float] | str | None = None,
        _worker_module: str = _DEFAULT_WORKER_MODULE,
    ) -> None:
        super().__init__()
        self.scheduler_address = scheduler_address
        self.nthreads = nthreads
        self.name = name
        self.memory_limit = memory_limit
        self.host = host
        self.reconnect_timeout = reconnect_timeout
        self.env: dict[str, str] = dict(env or {})
        self.security = security
        #: the worker's resources (``{"GPU": 2.0}``)
        self.resources = parse_resources(resources)
        self._worker_module = _worker_module

        self.worker_address: str | None = None
        self.worker_pid: int | None = None
        self.restarts = 0
        self.close_reason: str | None = None
        self.recent_logs: deque[str] = deque(maxlen=RECENT_LOG_LINES)

        self._plugins = NannyPlugins(self)
        #: nanny plugins (``client.register_plugin(NannyPlugin())``), by name
        self.plugins: dict[str, Any] = self._plugins.plugins

        self._serving = False
        self._run_scope: trio.CancelScope | None = None
        self._changed = trio.Event()

    def __repr__(self) -> str:
        return (
            f"<Nanny scheduler={self.scheduler_address!r} name={self.name!r} "
            f"worker={self.worker_address!r} pid={self.worker_pid} restarts={self.restarts} "
            f"status={self.status}>"
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run worker processes until closed, or until a worker stops by itself.

        Reports started once the first worker process has reported its address.

        Args:
            task_status: for ``nursery.start``.

        Raises:
            WorkerStartError: the first worker process did not start.
            NannyClosedError: :meth:`close` was called before the first worker started.
        """
        if self._serving:
            raise RuntimeError(f"{self!r} is already serving; a Nanny serves once")
        self._serving = True
        started = False

        def report_started() -> None:
            nonlocal started
            started = True
            if self.status == "created":
                self.status = "running"
            task_status.started()

        try:
            with trio.CancelScope() as self._run_scope:
                if self._close_requested.is_set():
                    self._run_scope.cancel()
                await self._supervise(report_started)
        finally:
            self._run_scope = None
            self._set_worker(None, None)
            if self.plugins:
                with trio.move_on_after(config.get_float("nanny.close-timeout")) as scope:
                    scope.shield = True
                    await self._plugins.teardown_all()
            self.status = "closed"
            self._closed.set()
            self._notify()
        if not started:
            raise NannyClosedError(
                f"The nanny for scheduler {self.scheduler_address} was closed before its "
                f"worker started"
            )

    def _request_close(self) -> None:
        super()._request_close()
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def close(self) -> None:
        """Stop the worker process and end :meth:`serve`; calling it again does nothing.

        The worker is asked to close (``nanny.close-timeout``), then terminated
        (``nanny.terminate-timeout``), then killed. This returns once the process
        is gone, even when the caller is cancelled meanwhile.
        """
        if sniffio.current_async_library() != "trio":
            if self._hosting is not None:
                await self._close_hosted()
            else:
                self._request_close()  # it never served: nothing to wait for
            return
        self._request_close()
        if self._serving:
            with trio.CancelScope(shield=True):  # bounded by the escalation's timeouts
                await self._closed.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def wait_for_worker(self, *, pid_not: int | None = None) -> int:
        """Wait until a worker process serves, other than ``pid_not``.

        Args:
            pid_not: a pid to look past, typically the one of a worker that was
                just killed, to wait for its replacement.

        Returns:
            The pid of the worker process now serving; :attr:`worker_address`
            has its address.

        Raises:
            NannyClosedError: the nanny ended first.
        """
        if self._in_foreign_loop():
            return await self._call_hosted(self._wait_for_worker, pid_not, ended=self._ended_error)
        return await self._wait_for_worker(pid_not)

    async def _wait_for_worker(self, pid_not: int | None) -> int:
        await trio.lowlevel.checkpoint()
        while True:
            if self.worker_pid is not None and self.worker_pid != pid_not:
                return self.worker_pid
            if self._closed.is_set():
                reason = f": {self.close_reason}" if self.close_reason else ""
                raise NannyClosedError(
                    f"The nanny for scheduler {self.scheduler_address} has ended{reason}"
                )
            await self._changed.wait()

    def _ended_error(self) -> NannyClosedError:
        return NannyClosedError(f"The nanny for scheduler {self.scheduler_address} has ended")

    # -- supervision --------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _set_worker(self, address: str | None, pid: int | None) -> None:
        if (address, pid) != (self.worker_address, self.worker_pid):
            self.worker_address, self.worker_pid = address, pid
            self._notify()

    def _argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            self._worker_module,
            "--scheduler",
            self.scheduler_address,
            "--nthreads",
            str(self.nthreads),
            "--memory-limit",
            str(self.memory_limit),
        ]
        if self.name is not None:
            argv += ["--name", self.name]
        if self.host is not None:
            argv += ["--host", self.host]
        if self.reconnect_timeout is not None:
            argv += ["--reconnect-timeout", repr(float(self.reconnect_timeout))]
        if self.resources:
            argv += ["--resources", format_resources(self.resources)]
        if self.security is not None:
            argv += ["--security-on-stdin"]
        return argv

    async def _supervise(self, report_started: Callable[[], None]) -> None:
        first = True
        failing_since: float | None = None  # when restarts began to fail to start
        give_up_after = (
            self.reconnect_timeout
            if self.reconnect_timeout is not None
            else config.get_float("worker.reconnect-timeout")
        )
        while True:
            child = await self._run_worker(report_started if first else None)
            returncode = child.process.returncode
            if self._close_requested.is_set():
                return
            if child.address is None:
                if first:
                    raise self._start_error(child)
                # a cluster that is gone gets no new worker: stop once new
                # ones have failed to start for the worker's reconnect-timeout
                now = trio.current_time()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= give_up_after:
                    self.close_reason = (
                        f"new worker processes for the scheduler at {self.scheduler_address} "
                        f"have failed to start for {now - failing_since:.3g} s "
                        f"(worker.reconnect-timeout {give_up_after:g} s), the last because "
                        f"{self._why_not_started(child)}; the nanny starts no more"
                    )
                    logger.error("[%s] %s", child.label, self.close_reason)
                    return
                logger.warning(
                    "[%s] The new worker process did not start: %s; trying again",
                    child.label,
                    self._why_not_started(child),
                )
            elif returncode == EXIT_STOPPED_BY_ITSELF:
                # worker_process.EXIT_SCHEDULER_LOST: the worker lost its scheduler for good,
                # or the scheduler told it to close; either way a new one must not start
                self.close_reason = child.close_reason or (
                    f"the worker {_describe_exit(returncode)} (it stopped by itself "
                    f"without saying why)"
                )
                logger.error(
                    "[%s] The worker stopped by itself, so the nanny stops too: %s",
                    child.label,
                    self.close_reason,
                )
                return
            else:
                logger.warning(
                    "[%s] The worker process %s; starting a new one",
                    child.label,
                    _describe_exit(returncode),
                )
            if child.address is not None:
                failing_since = None
            first = False
            lifetime = trio.current_time() - child.started_at
            if child.address is None or lifetime < _QUICK_DEATH_SECONDS:
                await trio.sleep(config.get_float("nanny.restart-backoff"))
            self.restarts += 1

    async def _run_worker(self, report_started: Callable[[], None] | None) -> _Child:
        """Start one worker process and supervise it until it has exited and been reaped."""
        env = {**os.environ, **self.env} if self.env else None
        process = await trio.lowlevel.open_process(
            self._argv(),
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,
            env=env,
            process_group=0,  # see the theory of operation: Ctrl-C is the nanny's to handle
        )
        # no checkpoint between here and the try: the process is always stopped and reaped
        child = _Child(
            process=process,
            label=f"{self.name or 'worker'} pid {process.pid}",
            started_at=trio.current_time(),
        )
        try:
            async with trio.open_nursery() as readers:
                stdout_scope = trio.CancelScope(shield=True)
                stderr_scope = trio.CancelScope(shield=True)
                readers.start_soon(self._read_control, child, stdout_scope)
                readers.start_soon(self._read_logs, child, stderr_scope)
                try:
                    await self._send_security(child)
                    await self._watch(child, report_started)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._stop_process(child)
                        with trio.move_on_after(_PIPE_DRAIN_SECONDS):
                            await child.stdout_done.wait()
                            await child.stderr_done.wait()
                        stdout_scope.cancel()
                        stderr_scope.cancel()
                        if self.worker_pid == process.pid:
                            self._set_worker(None, None)
        finally:
            with trio.CancelScope(shield=True):
                for stream in (process.stdin, process.stdout, process.stderr):
                    if stream is not None:
                        await stream.aclose()
                if process.returncode is None:  # only if something above failed
                    process.kill()
                await process.wait()
        return child

    async def _send_security(self, child: _Child) -> None:
        """The Security as the first line of the child's stdin (see ``security``)."""
        stdin = child.process.stdin
        if self.security is None or stdin is None:
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            # it died at once: the watch that follows finds out why
            await stdin.send_all(self.security.to_json().encode() + b"\n")

    async def _watch(self, child: _Child, report_started: Callable[[], None] | None) -> None:
        start_timeout = config.get_float("nanny.start-timeout")
        with trio.move_on_after(start_timeout) as start_scope:
            await child.announced.wait()
        if child.address is None:
            child.timed_out = start_scope.cancelled_caught
            return
        logger.info("[%s] Worker process serves at %s", child.label, child.address)
        self._set_worker(child.address, child.process.pid)
        if report_started is not None:
            report_started()
        async with trio.open_nursery() as nursery:
            if self.memory_limit:
                nursery.start_soon(self._monitor_memory, child)
            nursery.start_soon(self._serve_plugin_requests, child)
            await child.process.wait()
            nursery.cancel_scope.cancel()

    async def _serve_plugin_requests(self, child: _Child) -> None:
        """Set up the nanny plugins the worker passes on, answering on its stdin."""
        stdin = child.process.stdin
        assert stdin is not None
        while True:
            await child.plugin_requested.wait()
            child.plugin_requested = trio.Event()
            requests, child.plugin_requests = child.plugin_requests, []
            for request in requests:
                answer = await self._plugins.handle(request)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stdin.send_all(json.dumps(answer).encode() + b"\n")

    async def _monitor_memory(self, child: _Child) -> None:
        """Kill the worker past ``worker.memory.terminate`` (a new one starts;
        the scheduler recomputes its tasks elsewhere)."""
        policy = MemoryPolicy(int(self.memory_limit), memory_thresholds())
        interval = config.get_float("worker.memory.monitor-interval")
        try:
            process = psutil.Process(child.process.pid)
        except psutil.Error:
            return
        while child.process.returncode is None:
            await trio.sleep(interval)
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                return
            for action in policy.nanny_sample(rss):
                logger.warning(
                    "[%s] Worker exceeded its memory budget (%s); restarting it",
                    child.label, action.reason,
                )
                child.process.kill()
                return

    async def _stop_process(self, child: _Child) -> None:
        """Ask, then terminate, then kill; each step bounded. The caller shields this."""
        process, label = child.process, child.label
        stdin = process.stdin
        assert stdin is not None
        if process.returncode is None:
            close_timeout = config.get_float("nanny.close-timeout")
            logger.info("[%s] Closing the worker process", label)
            with trio.move_on_after(close_timeout):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stdin.send_all(f"{CLOSE_COMMAND}\n".encode())
                await stdin.aclose()
                await process.wait()
            if process.returncode is None:
                terminate_timeout = config.get_float("nanny.terminate-timeout")
                logger.warning(
                    "[%s] The worker process did not close within %s s of being asked "
                    "('nanny.close-timeout'); terminating it",
                    label,
                    close_timeout,
                )
                process.terminate()
                with trio.move_on_after(terminate_timeout):
                    await process.wait()
                if process.returncode is None:
                    logger.warning(
                        "[%s] The worker process did not exit within %s s of SIGTERM "
                        "('nanny.terminate-timeout'); killing it",
                        label,
                        terminate_timeout,
                    )
                    process.kill()
            await process.wait()
            logger.info("[%s] The worker process %s", label, _describe_exit(process.returncode))
        await stdin.aclose()

    # -- the readers --------------------------------------------------------------------

    async def _read_control(self, child: _Child, scope: trio.CancelScope) -> None:
        stream = child.process.stdout
        assert stream is not None
        try:
            with scope:
                splitter = _LineSplitter()
                while data := await stream.receive_some():
                    for line in splitter.feed(data):
                        self._on_control_line(child, line)
                for line in splitter.flush():
                    self._on_control_line(child, line)
        finally:
            child.stdout_done.set()
            child.announced.set()  # no address can come any more

    def _on_control_line(self, child: _Child, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        try:
            message: Any = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and "address" in message and child.address is None:
            child.address = str(message["address"])
            child.announced.set()
        elif isinstance(message, dict) and "close_reason" in message:
            child.close_reason = str(message["close_reason"])
        elif isinstance(message, dict) and isinstance(message.get("nanny_plugin"), dict):
            child.plugin_requests.append(message["nanny_plugin"])
            child.plugin_requested.set()
        elif line:
            self._on_log_line(child, line, logging.INFO)

    async def _read_logs(self, child: _Child, scope: trio.CancelScope) -> None:
        stream = child.process.stderr
        assert stream is not None
        level = logging.INFO
        try:
            with scope:
                splitter = _LineSplitter()
                while data := await stream.receive_some():
                    for line in splitter.feed(data):
                        level = self._on_log_line(child, line.decode(errors="replace"), level)
                for line in splitter.flush():
                    self._on_log_line(child, line.decode(errors="replace"), level)
        finally:
            child.stderr_done.set()

    def _on_log_line(self, child: _Child, line: str, level: int) -> int:
        """Forward one line of the child's output; returns the level it went out at."""
        line = line.rstrip("\r")
        match = _LEVEL_IN_LINE.search(line, 0, 200)
        if match:
            level = logging.getLevelNamesMapping()[match.group(1)]
        # lines without a level (a traceback's) keep the level of the line before
        child.last_lines.append(line)
        self.recent_logs.append(line)
        logger.log(level, "[%s] %s", child.label, line)
        return level

    # -- errors -------------------------------------------------------------------------

    @staticmethod
    def _why_not_started(child: _Child) -> str:
        if child.timed_out:
            timeout = config.get_float("nanny.start-timeout")
            return f"it did not report its address within {timeout} s ('nanny.start-timeout')"
        return f"it {_describe_exit(child.process.returncode)} before reporting its address"

    def _start_error(self, child: _Child) -> WorkerStartError:
        output = "\n".join(f"    {line}" for line in child.last_lines) or "    (no output)"
        return WorkerStartError(
            f"The worker process for scheduler {self.scheduler_address} did not start: "
            f"{self._why_not_started(child)}. Its last lines of output:\n{output}"
        )
