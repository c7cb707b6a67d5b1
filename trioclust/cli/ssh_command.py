"""``trioclust ssh HOST HOST...``: an SSHCluster until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

import trio

from trioclust.deploy.ssh import DEFAULT_CONNECT_TIMEOUT, SSHCluster
from trioclust.errors import ClusterStartError
from trioclust.runtime.process_control import configure_logging

DESCRIPTION = (
    "Start a trioclust cluster over ssh: the scheduler on the first host, workers on "
    "the others (one ssh connection per host). Prints the scheduler's address as a JSON "
    "line; Ctrl-C or SIGTERM closes the cluster, and every remote process ends with it."
)

logger = logging.getLogger("trioclust.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hosts", nargs="+", help="the scheduler's host, then the workers' hosts")
    parser.add_argument("--nworkers", type=int, default=1, help="workers per host (default 1)")
    parser.add_argument("--nthreads", type=int, default=1, help="threads per worker (default 1)")
    parser.add_argument("--memory-limit", default=None, help="memory per worker (e.g. 4GiB; default none)")
    parser.add_argument("--scheduler-port", type=int, default=8786, help="the scheduler's port (default 8786)")
    parser.add_argument("--remote-python", default=None, help="python on the hosts (default python3)")
    parser.add_argument("--ssh-username", default=None, help="user to log in as")
    parser.add_argument("--ssh-port", type=int, default=None, help="sshd's port")
    parser.add_argument("--ssh-private-key", default=None, help="key file to log in with")
    parser.add_argument(
        "--no-host-key-check", action="store_true", help="do not check the hosts' keys (test set-ups)"
    )
    parser.add_argument(
        "--setup", action="append", default=[], help="a shell command to run first on each host (repeatable)"
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
        help=f"seconds to connect and start on a host (default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    parser.add_argument("--worker-class", default="trioclust.Nanny", help="trioclust.Nanny or trioclust.Worker")


async def _serve(args: argparse.Namespace) -> None:
    connect: dict[str, object] = {}
    if args.ssh_username:
        connect["username"] = args.ssh_username
    if args.ssh_port:
        connect["port"] = args.ssh_port
    if args.ssh_private_key:
        connect["client_keys"] = args.ssh_private_key
    if args.no_host_key_check:
        connect["known_hosts"] = None
    worker_options: dict[str, object] = {"n_workers": args.nworkers, "nthreads": args.nthreads}
    if args.memory_limit:
        worker_options["memory_limit"] = args.memory_limit
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with SSHCluster(
            args.hosts, connect_options=connect, worker_options=worker_options,
            scheduler_options={"port": args.scheduler_port}, worker_class=args.worker_class,
            remote_python=args.remote_python, setup=args.setup,
            connect_timeout=args.connect_timeout, asynchronous=True,
        ) as cluster:
            print(json.dumps({"address": cluster.scheduler_address}), flush=True)
            logger.info("SSHCluster at %s: %r", cluster.scheduler_address, cluster)
            async for signum in signals:
                logger.info("Received %s: closing", signal.Signals(signum).name)
                break


def run(args: argparse.Namespace) -> int:
    """Run the cluster until a signal; returns the exit code."""
    configure_logging()
    try:
        trio.run(_serve, args)
    except ClusterStartError as exc:
        print(f"trioclust ssh: {exc}", file=sys.stderr)
        return 1
    return 0
