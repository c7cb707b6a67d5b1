"""``trioclust scheduler``: a scheduler (and its dashboard) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import trio

from trioclust import config
from trioclust.cli.tls_options import add_tls_arguments, protocol_and_security
from trioclust.errors import EncryptionRequiredError
from trioclust.runtime.process_control import configure_logging
from trioclust.runtime.scheduler import Scheduler

DESCRIPTION = (
    "Run a trioclust scheduler. Workers connect with 'trioclust worker ADDRESS' and "
    "clients with Client('ADDRESS'). Ctrl-C or SIGTERM closes it."
)

logger = logging.getLogger("trioclust.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1: this machine only; "
        "0.0.0.0 for every interface, so workers on other machines can connect)",
    )
    parser.add_argument("--port", type=int, default=8786, help="port to listen on (default 8786; 0: any free port)")
    parser.add_argument(
        "--protocol", default=None, choices=["tcp", "tls", "ws", "wss", "ucx"],
        help="transport (default tcp; tls when given --tls-* certificates)",
    )
    add_tls_arguments(parser, role="scheduler")
    parser.add_argument(
        "--dashboard-address", default=None,
        help="where the dashboard listens, [host]:port; ':8787' means port 8787 on --host "
        "(default: the config's scheduler.dashboard-address, ':8787')",
    )
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    parser.add_argument(
        "--scheduler-file", type=Path, default=None,
        help="write the scheduler's address (JSON) to this file, for 'trioclust worker --scheduler-file'",
    )


def _dashboard_address(args: argparse.Namespace) -> str | None:
    # ":8787" means port 8787 on the scheduler's own host
    if args.no_dashboard:
        return None
    return str(args.dashboard_address or config.get("scheduler.dashboard-address"))


async def _serve(args: argparse.Namespace) -> int:
    protocol, security = protocol_and_security(args, role="scheduler")
    scheduler = Scheduler(
        host=args.host, port=args.port, protocol=protocol,
        dashboard_address=_dashboard_address(args), security=security,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            link = scheduler.dashboard_link
            logger.info("dashboard at: %s", link if link else "off (--no-dashboard)")
            if args.scheduler_file is not None:
                _write_scheduler_file(args.scheduler_file, scheduler.address, link)
            async for signum in signals:
                logger.info("Received %s: closing the scheduler", signal.Signals(signum).name)
                break
            await scheduler.close()
    return 0


def _write_scheduler_file(path: Path, address: str, dashboard: str | None) -> None:
    info: dict[str, Any] = {"address": address, "dashboard": dashboard, "pid": os.getpid()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)  # a reader never sees half a file


def run(args: argparse.Namespace) -> int:
    """Run until Ctrl-C / SIGTERM; returns the exit code."""
    configure_logging()
    try:
        return trio.run(_serve, args)
    except (OSError, EncryptionRequiredError) as exc:
        logger.error("Could not start the scheduler: %s", exc)
        return 1
