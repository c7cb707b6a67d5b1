"""``trioclust`` with its subcommands; ``trioclust-scheduler`` and ``trioclust-worker`` are aliases."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from trioclust.cli import scheduler_command, ssh_command, worker_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioclust",
        description="Run the parts of a trioclust cluster: a scheduler, and workers that connect to it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{scheduler,worker,ssh}")
    scheduler_command.add_arguments(
        sub.add_parser("scheduler", help="run a scheduler", description=scheduler_command.DESCRIPTION)
    )
    worker_command.add_arguments(
        sub.add_parser("worker", help="run workers (under nannies)", description=worker_command.DESCRIPTION)
    )
    ssh_command.add_arguments(
        sub.add_parser("ssh", help="run a cluster over ssh", description=ssh_command.DESCRIPTION)
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``trioclust scheduler ...`` / ``worker ...`` / ``ssh ...``; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "scheduler":
        return scheduler_command.run(args)
    if args.command == "ssh":
        return ssh_command.run(args)
    return worker_command.run(args)


def scheduler_main(argv: Sequence[str] | None = None) -> int:
    """``trioclust-scheduler ...``: the same as ``trioclust scheduler ...``."""
    return main(["scheduler", *(sys.argv[1:] if argv is None else argv)])


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``trioclust-worker ...``: the same as ``trioclust worker ...``."""
    return main(["worker", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
