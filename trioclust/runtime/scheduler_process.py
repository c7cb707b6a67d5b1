"""A scheduler in a process of its own.

Run as ``python -m trioclust.runtime.scheduler_process [--host 127.0.0.1] [--port 0]``.

It speaks the protocol of :mod:`trioclust.runtime.process_control`, like the
worker process a nanny starts: once the scheduler listens, one line
``{"address": ..., "pid": ...}`` goes out on stdout and nothing else ever
does; the log goes to stderr; a ``close`` line or end of file on stdin, and
SIGTERM or SIGINT, close the scheduler gracefully and the process exits with
:data:`~trioclust.runtime.process_control.EXIT_OK`. A second request stops it
at once. It exits with :data:`~trioclust.runtime.process_control.EXIT_FAILED`
when the scheduler fails (its port is taken, say) or stops without being asked.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import IO

from trioclust.runtime.process_control import (
    EXIT_FAILED,
    EXIT_OK,
    configure_logging,
    open_control_channel,
    run_trio,
    serve_until_closed,
)

__all__ = ["main"]

logger = logging.getLogger("trioclust.scheduler_process")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trioclust.runtime.scheduler_process",
        description="A trioclust scheduler in a process of its own, closed through its stdin.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the interface to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="the port to listen on; 0 (the default) picks a free one",
    )
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace, channel: IO[str]) -> int:
    from trioclust.runtime.scheduler import Scheduler

    scheduler = Scheduler(host=args.host, port=args.port)
    if await serve_until_closed(scheduler, channel, noun="scheduler", parent="its parent process"):
        return EXIT_OK
    logger.error("The scheduler at %s stopped without being asked to", scheduler.address)
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run one scheduler until it is asked to close.

    Args:
        argv: command-line arguments, without the program name; ``sys.argv[1:]``
            when ``None``.

    Returns:
        The process exit code: ``EXIT_OK`` after a requested close, else ``EXIT_FAILED``.
    """
    args = _parse_args(argv)
    configure_logging()
    channel = open_control_channel()
    try:
        return run_trio(
            _run, args, channel, failure=f"The scheduler on {args.host} port {args.port} failed"
        )
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
