"""What a server process and the process that started it share: pipes, signals, exit codes.

Theory of operation
-------------------
A server run as a child process (``python -m trioclust.runtime.worker_process``
under a nanny, ``python -m trioclust.runtime.scheduler_process`` under a
cluster or a test) talks to its parent over the three standard streams and
nothing else:

* stdout is the control channel, child to parent, one JSON object per line.
  Once the server serves, the first line is ``{"address": ..., "pid": ...}``;
  a worker that later stops by itself adds ``{"close_reason": ...}``. So that
  ``print()`` in user code (or output from C code) cannot corrupt the channel
  or fill an unread pipe, :func:`open_control_channel` points file descriptor
  1 at stderr and keeps a private duplicate of the original stdout.
* stdin is the control channel, parent to child: a line ``close``
  (:data:`CLOSE_COMMAND`) asks for a graceful close, and so does end of file;
  a line holding a JSON object goes to the server's handler (a nanny's
  answers to its worker: :mod:`trioclust.runtime.nanny_plugins`).
  A parent that dies closes the pipe by dying, so a child never outlives it.
* stderr carries the log lines, in :data:`LOG_FORMAT`.

SIGTERM and SIGINT ask for a graceful close too. A second request of any kind
(SIGTERM after ``close``, a second Ctrl-C) stops the server at once, without
finishing the graceful close. :func:`serve_until_closed` runs all of this
around any server that has ``address``, ``serve``, ``close`` and
``wait_closed``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import IO, Any, Protocol

import trio

__all__ = [
    "CLOSE_COMMAND",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_STOPPED_BY_ITSELF",
    "LOG_FORMAT",
    "ProcessServer",
    "configure_logging",
    "open_control_channel",
    "run_trio",
    "send",
    "serve_until_closed",
]

EXIT_OK = 0
"""The server closed because it was asked to (``close`` on stdin, EOF, SIGTERM, SIGINT)."""
EXIT_FAILED = 1
"""The server raised; its traceback is on stderr."""
EXIT_STOPPED_BY_ITSELF = 3
"""The server stopped without being asked (a worker that lost its scheduler, or was retired)."""

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
"""The format of every log line a server process writes to stderr."""

CLOSE_COMMAND = "close"
"""The line on stdin that asks a server process to close gracefully."""

logger = logging.getLogger("trioclust.process")


class ProcessServer(Protocol):
    """What :func:`serve_until_closed` needs of a server; every ``Server`` has it."""

    @property
    def address(self) -> str: ...

    async def serve(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...

    async def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


def configure_logging() -> None:
    """Send this process's log records, from INFO up, to stderr in :data:`LOG_FORMAT`."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr, force=True)


def open_control_channel() -> IO[str]:
    """Keep the real stdout for the parent and send everything else written to fd 1 to stderr.

    Returns:
        The control channel, line-buffered; close it before exiting.
    """
    sys.stdout.flush()
    channel_fd = os.dup(sys.stdout.fileno())  # not inherited by grandchildren
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # print() reaches the logs promptly
    return os.fdopen(channel_fd, "w", encoding="utf-8", buffering=1)


def send(channel: IO[str], message: dict[str, Any]) -> None:
    """Write one JSON line on the control channel."""
    channel.write(json.dumps(message) + "\n")
    channel.flush()


async def _watch_stdin(
    request_close: Callable[[str], None],
    parent: str,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Ask for a close on a ``close`` line or at end of file; give a line holding
    a JSON object to ``on_message``; ignore anything else."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        buffer = b""
        while True:
            chunk = await stream.receive_some()
            if not chunk:
                request_close("its stdin was closed")
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip().decode(errors="replace") == CLOSE_COMMAND:
                    request_close(f"{parent} asked it to close")
                    return
                if on_message is not None and line.lstrip().startswith(b"{"):
                    try:
                        message = json.loads(line)
                    except ValueError:
                        message = None
                    if isinstance(message, dict):
                        on_message(message)
                        continue
                logger.warning("Ignoring an unknown command on stdin: %r", line[:200])


async def _watch_signals(signals: AsyncIterator[int], request_close: Callable[[str], None]) -> None:
    async for signum in signals:
        request_close(f"it received {signal.Signals(signum).name}")


async def serve_until_closed(
    server: ProcessServer,
    channel: IO[str],
    *,
    noun: str,
    parent: str,
    on_message: Callable[[dict[str, Any]], None] | None = None,
) -> bool:
    """Serve until asked to close (stdin, signals) or until the server stops by itself.

    Sends ``{"address", "pid"}`` on the channel once the server serves.

    Args:
        server: the server to run.
        channel: the control channel from :func:`open_control_channel`.
        noun: what the server is, for log lines ("worker", "scheduler").
        parent: who writes ``close`` on stdin, for log lines ("the nanny").
        on_message: called with each JSON object the parent writes on stdin
            (a nanny's answers, see runtime/nanny_plugins.py).

    Returns:
        True when the server closed because it was asked to, False when it
        stopped by itself.
    """
    close_requested = trio.Event()
    close_done = trio.Event()

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            starting = True

            def request_close(why: str) -> None:
                if close_requested.is_set():
                    # asked again (the nanny's SIGTERM, a second Ctrl-C): the graceful
                    # close is taking too long, so stop without finishing it
                    logger.warning("Stopping the %s at once because %s", noun, why)
                    nursery.cancel_scope.cancel()
                    return
                logger.info("Closing the %s because %s", noun, why)
                close_requested.set()
                if starting:
                    nursery.cancel_scope.cancel()  # abandon the start-up

            async def close_when_asked() -> None:
                await close_requested.wait()
                await server.close()
                close_done.set()

            # watchers first, so that a close asked for during start-up is honoured
            nursery.start_soon(_watch_stdin, request_close, parent, on_message)
            nursery.start_soon(_watch_signals, signals, request_close)
            await nursery.start(server.serve)
            starting = False
            nursery.start_soon(close_when_asked)
            send(channel, {"address": server.address, "pid": os.getpid()})
            await server.wait_closed()
            if close_requested.is_set():
                await close_done.wait()  # let a graceful close finish its work
            nursery.cancel_scope.cancel()
    return close_requested.is_set()


def run_trio(async_fn: Callable[..., Coroutine[Any, Any, int]], *args: Any, failure: str) -> int:
    """``trio.run(async_fn, *args)``, with an error logged and turned into :data:`EXIT_FAILED`.

    Args:
        async_fn: returns the exit code.
        *args: its arguments.
        failure: the log message for an error, e.g. "The worker for scheduler X failed".

    Returns:
        The exit code ``async_fn`` returned, or :data:`EXIT_FAILED` if it raised.
    """
    try:
        return trio.run(async_fn, *args)
    except Exception as exc:
        # a lone error wrapped by nurseries is easier to read on its own
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        logger.error("%s: %r", failure, exc, exc_info=exc)
        return EXIT_FAILED
