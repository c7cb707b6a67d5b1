"""``trioclust worker``: workers for a scheduler, each under a nanny, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import signal
from pathlib import Path
from typing import Any

import trio

from trioclust import config
from trioclust.cli.tls_options import add_tls_arguments, protocol_and_security
from trioclust.deploy.sizing import cpu_count, memory_limit_per_worker, workers_and_threads
from trioclust.errors import EncryptionRequiredError
from trioclust.runtime.nanny import Nanny
from trioclust.runtime.process_control import EXIT_STOPPED_BY_ITSELF, configure_logging
from trioclust.runtime.resources import parse_resources
from trioclust.runtime.worker import Worker
from trioclust.transport.addresses import normalize_address

DESCRIPTION = (
    "Run trioclust workers for the scheduler at ADDRESS, each in its own process under a "
    "nanny that restarts it if it dies. Ctrl-C or SIGTERM closes them, each first telling "
    "the scheduler it is leaving."
)

logger = logging.getLogger("trioclust.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", nargs="?", help="the scheduler, e.g. tcp://127.0.0.1:8786")
    parser.add_argument(
        "--scheduler-file", type=Path, default=None,
        help="read the scheduler's address from this file (written by 'trioclust scheduler "
        "--scheduler-file'); waits for it to appear",
    )
    parser.add_argument(
        "--nworkers", default="1",
        help="worker processes to start, or 'auto' to fill this machine's cores (default 1)",
    )
    parser.add_argument("--nthreads", type=int, default=None, help="threads per worker (default: cores / nworkers)")
    parser.add_argument(
        "--memory-limit", default="auto",
        help="bytes per worker: 'auto' (this machine's memory / nworkers), '4GiB', or 0 for no limit",
    )
    parser.add_argument("--name", default=None, help="worker name (with several workers: NAME-0, NAME-1, ...)")
    parser.add_argument("--host", default=None, help="interface to listen on (default: the one that reaches the scheduler)")
    parser.add_argument(
        "--resources", default=None,
        help='abstract resources of each worker, e.g. "GPU=2,MEM=10e9" (tasks submitted '
        'with resources={"GPU": 1} run only where they are free)',
    )
    parser.add_argument(
        "--no-nanny", dest="nanny", action="store_false",
        help="run the workers in this process, without nannies (a dead worker is not restarted)",
    )
    parser.add_argument(
        "--death-timeout", type=float, default=None,
        help="seconds to keep trying to reach the scheduler, at start and after losing it, "
        "before giving up (default: worker.reconnect-timeout)",
    )
    add_tls_arguments(parser, role="worker")


async def _read_scheduler_file(path: Path, timeout: float) -> str:
    with trio.move_on_after(timeout):
        while True:
            try:
                return str(json.loads(await trio.Path(path).read_text())["address"])
            except (OSError, ValueError, KeyError):
                await trio.sleep(0.1)  # the scheduler has not written it yet
    raise SystemExit(f"No scheduler address appeared in {path} within {timeout:g} s")


def _plan(args: argparse.Namespace) -> tuple[int, int, int]:
    cores = cpu_count()
    if args.nworkers == "auto":
        n, threads = workers_and_threads(cores, None, args.nthreads, processes=True)
    else:
        try:
            n = int(args.nworkers)
        except ValueError:
            raise SystemExit(f"--nworkers takes a number or 'auto', not {args.nworkers!r}") from None
        threads = args.nthreads or max(1, cores // max(n, 1))
    memory = args.memory_limit
    memory = memory if memory == "auto" else (0 if memory in ("0", "none", "None") else memory)
    return n, threads, memory_limit_per_worker(memory, n)


async def _serve(args: argparse.Namespace) -> int:
    timeout = args.death_timeout if args.death_timeout is not None else config.get_float("worker.reconnect-timeout")
    if args.scheduler_file is not None:
        address = await _read_scheduler_file(args.scheduler_file, timeout)
    elif args.address:
        address = normalize_address(args.address)
    else:
        raise SystemExit("Give the scheduler's ADDRESS or --scheduler-file PATH")
    _, security = protocol_and_security(args, role="worker")
    n, threads, memory = _plan(args)
    try:
        resources = parse_resources(args.resources)
    except ValueError as exc:
        raise SystemExit(f"--resources: {exc}") from None
    names = [args.name] if n == 1 and args.name else [
        f"{args.name}-{i}" if args.name else None for i in range(n)
    ]
    workers: list[Any] = [
        (Nanny if args.nanny else Worker)(
            address, nthreads=threads, name=name, memory_limit=memory, host=args.host,
            reconnect_timeout=args.death_timeout, security=security, resources=resources,
        )
        for name in names
    ]
    logger.info(
        "Starting %d worker%s (%d threads each%s) for %s",
        n, "s" if n != 1 else "", threads, ", under nannies" if args.nanny else "", address,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            with config.set(**{"comm.timeouts.connect": timeout}):
                for worker in workers:
                    await nursery.start(worker.serve)

            async def all_stopped() -> None:
                for worker in workers:
                    await worker.wait_closed()
                nursery.cancel_scope.cancel()

            nursery.start_soon(all_stopped)
            async for signum in signals:
                logger.info("Received %s: closing the workers", signal.Signals(signum).name)
                break
            async with trio.open_nursery() as closers:
                for worker in workers:
                    closers.start_soon(worker.close)
            nursery.cancel_scope.cancel()
    reasons = [w.close_reason for w in workers if w.close_reason]
    if reasons:
        logger.error("The workers stopped by themselves: %s", reasons[0])
        return EXIT_STOPPED_BY_ITSELF
    return 0


def run(args: argparse.Namespace) -> int:
    """Run until Ctrl-C / SIGTERM; returns the exit code."""
    configure_logging()
    try:
        return trio.run(_serve, args)
    except (OSError, EncryptionRequiredError) as exc:
        logger.error("Could not start the workers: %s", exc)
        return 1
