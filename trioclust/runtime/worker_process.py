"""The worker process a :class:`~trioclust.runtime.nanny.Nanny` starts.

Run as ``python -m trioclust.runtime.worker_process --scheduler ADDR ...``.

With ``--security-on-stdin`` the first line on stdin is the worker's
:class:`~trioclust.Security` as JSON (:meth:`~trioclust.Security.to_json`),
read before the control channel starts: the nanny hands over certificates
and keys that way rather than through files, arguments or the environment.

The nanny and this process talk over the three standard streams, as
:mod:`trioclust.runtime.process_control` describes: the address goes out on
stdout once the worker serves, ``close`` or end of file on stdin (and SIGTERM,
SIGINT) close it gracefully, the log goes to stderr.

A worker can also stop by itself: it lost its scheduler for longer than its
``reconnect_timeout``, or the scheduler told it to close (a retirement). Then
a last control line ``{"close_reason": ...}`` says why, the reason is logged,
and the process exits with :data:`EXIT_SCHEDULER_LOST`, which tells the nanny
not to start a new worker. Exit codes: :data:`EXIT_OK` after a requested
close, :data:`EXIT_SCHEDULER_LOST` when the worker stopped by itself,
:data:`EXIT_FAILED` when the worker raised.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, Any, Protocol, cast

from trioclust.runtime.nanny_plugins import NannyPipe
from trioclust.runtime.process_control import (
    CLOSE_COMMAND,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED_BY_ITSELF,
    LOG_FORMAT,
    ProcessServer,
    configure_logging,
    open_control_channel,
    run_trio,
    send,
    serve_until_closed,
)

__all__ = [
    "CLOSE_COMMAND",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SCHEDULER_LOST",
    "LOG_FORMAT",
    "main",
]

EXIT_SCHEDULER_LOST = EXIT_STOPPED_BY_ITSELF
"""The worker stopped by itself: it lost its scheduler, or the scheduler told it to close."""

NO_REASON = (
    "it closed without giving a reason (a Worker does that when its scheduler tells it to close)"
)
"""The close reason reported for a worker that stopped by itself and did not say why."""

logger = logging.getLogger("trioclust.worker_process")


class ServingWorker(ProcessServer, Protocol):
    """What this module needs of a worker; :class:`trioclust.runtime.worker.Worker` has it."""

    @property
    def close_reason(self) -> str | None: ...


WorkerFactory = Callable[..., ServingWorker]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trioclust.runtime.worker_process",
        description="A trioclust worker, as started and supervised by a nanny.",
    )
    parser.add_argument("--scheduler", required=True, help="the scheduler's address")
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--name", default=None)
    parser.add_argument("--memory-limit", type=int, default=0, help="bytes; 0 for no limit")
    parser.add_argument("--host", default=None)
    parser.add_argument("--reconnect-timeout", type=float, default=None)
    parser.add_argument("--resources", default=None, help='e.g. "GPU=2,MEM=10e9"')
    parser.add_argument(
        "--security-on-stdin", action="store_true",
        help="read the worker's Security (JSON) from the first line of stdin",
    )
    return parser.parse_args(argv)


def _read_first_line(fd: int) -> str:
    """One line from ``fd``, a byte at a time, so not a byte after it is taken
    (the control channel reads the rest of stdin)."""
    line = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return line.decode()
        line += byte


async def _run(args: argparse.Namespace, factory: WorkerFactory, channel: IO[str]) -> int:
    extra: dict[str, Any] = {"security": args.security} if args.security is not None else {}
    if args.resources:
        extra["resources"] = args.resources
    worker = factory(
        args.scheduler,
        nthreads=args.nthreads,
        name=args.name,
        memory_limit=args.memory_limit,
        host=args.host,
        reconnect_timeout=args.reconnect_timeout,
        **extra,
    )
    pipe = NannyPipe(partial(send, channel))
    if hasattr(worker, "nanny_pipe"):
        cast(Any, worker).nanny_pipe = pipe  # NannyPlugins pass through it (runtime/nanny_plugins.py)
    if await serve_until_closed(
        worker, channel, noun="worker", parent="the nanny", on_message=pipe.deliver
    ):
        return EXIT_OK
    if getattr(worker, "restart_requested", False):
        return EXIT_OK  # client.restart: the nanny starts a fresh worker
    reason = worker.close_reason or NO_REASON
    logger.error(
        "The worker at %s stopped by itself, for good (a nanny will not restart it): %s",
        worker.address,
        reason,
    )
    send(channel, {"close_reason": reason})
    return EXIT_SCHEDULER_LOST


def main(argv: Sequence[str] | None = None, *, worker_factory: WorkerFactory | None = None) -> int:
    """Run one worker until it is asked to close or stops by itself.

    Args:
        argv: command-line arguments, without the program name; ``sys.argv[1:]``
            when ``None``.
        worker_factory: builds the worker from the scheduler address and the
            keyword arguments of :class:`~trioclust.runtime.worker.Worker`;
            the real ``Worker`` when ``None``. Tests pass a fake.

    Returns:
        The process exit code: :data:`EXIT_OK`, :data:`EXIT_SCHEDULER_LOST` or
        :data:`EXIT_FAILED`.
    """
    args = _parse_args(argv)
    configure_logging()
    args.security = None
    if args.security_on_stdin:
        from trioclust.security import Security

        args.security = Security.from_json(_read_first_line(sys.stdin.fileno()))
    if worker_factory is None:
        from trioclust.runtime.worker import Worker

        worker_factory = Worker
    channel = open_control_channel()
    try:
        return run_trio(
            _run,
            args,
            worker_factory,
            channel,
            failure=f"The worker for scheduler {args.scheduler} failed",
        )
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
