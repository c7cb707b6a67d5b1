"""``python -m trioclust.deploy.remote``: a scheduler or workers that live as long as their stdin.

A cluster manager that reaches a machine through a pipe (``ssh host python
-m trioclust.deploy.remote ...``) runs this there. It starts a Scheduler, or
``--n-workers`` Nannies (or Workers) in one process, prints one JSON line on
stdout once they serve (``{"scheduler": address}`` or ``{"workers":
[addresses]}``, then ``{"error": text}`` if starting failed), and closes them
gracefully when its stdin ends: the manager closing the pipe, or the
connection dropping, ends every process it started on that machine. Nannies
kill their worker processes when they close, so nothing outlives the link.

``--options`` carries the remaining keyword arguments of the Scheduler or of
each Nanny/Worker as one JSON object (a cluster manager's
``scheduler_options`` / ``worker_options``, such as ``worker_ttl`` or
``reconnect_timeout``); durations may be numbers or ``"2s"``-style strings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import trio

from trioclust import config
from trioclust.deploy.adaptive import parse_seconds
from trioclust.runtime.nanny import Nanny
from trioclust.runtime.scheduler import Scheduler
from trioclust.runtime.worker import Worker

#: keyword arguments given in seconds, which may also be written "500ms", "2s", "1min"
DURATIONS = frozenset({"worker_ttl", "reconnect_timeout", "heartbeat_interval"})


def keyword_options(text: str) -> dict[str, Any]:
    """The ``--options`` JSON object as keyword arguments, durations in seconds."""
    options = json.loads(text) if text else {}
    if not isinstance(options, dict):
        raise ValueError(f"--options must be a JSON object, got {text!r}")
    return {
        k: parse_seconds(v) if k in DURATIONS and isinstance(v, str) else v
        for k, v in options.items()
    }


def _print(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def _until_stdin_ends() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        while await stdin.receive_some(4096):
            pass


async def _main(args: argparse.Namespace) -> None:
    servers: list[Any] = []
    async with trio.open_nursery() as nursery:
        try:
            if args.role == "scheduler":
                scheduler = Scheduler(
                    host=args.host, port=args.port, dashboard_address=args.dashboard_address,
                    **keyword_options(args.options),
                )
                await nursery.start(scheduler.serve)
                servers.append(scheduler)
                _print({"scheduler": scheduler.address, "dashboard": scheduler.dashboard_link})
            else:
                kind = Nanny if args.worker_class.endswith("Nanny") else Worker
                options = keyword_options(args.options)
                for i in range(args.n_workers):
                    server: Any = kind(
                        args.scheduler, nthreads=args.nthreads, name=f"{args.name}-{i}",
                        memory_limit=args.memory_limit, host=args.host, **options,
                    )
                    await nursery.start(server.serve)
                    servers.append(server)
                addresses = [
                    s.worker_address if isinstance(s, Nanny) else s.address for s in servers
                ]
                _print({"workers": addresses, "host": os.uname().nodename})
        except Exception as exc:
            _print({"error": f"{type(exc).__name__}: {exc}"})
            raise
        await _until_stdin_ends()
        with trio.move_on_after(4 * config.get_float("runtime.close-timeout")) as scope:
            scope.shield = True
            for server in reversed(servers):
                await server.close()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    """Run a scheduler or workers until stdin ends."""
    parser = argparse.ArgumentParser(prog="python -m trioclust.deploy.remote")
    parser.add_argument("role", choices=["scheduler", "workers"])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--dashboard-address", default=None)
    parser.add_argument("--scheduler", default="")
    parser.add_argument("--n-workers", type=int, default=1)
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--memory-limit", type=int, default=0)
    parser.add_argument("--name", default="worker")
    parser.add_argument("--worker-class", default="trioclust.Nanny")
    parser.add_argument("--options", default="", help="more keyword arguments, as a JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s - %(levelname)s - %(message)s")
    try:
        trio.run(_main, args)
    except KeyboardInterrupt:
        pass
    except BaseException:  # reported on stdout already
        sys.exit(1)


if __name__ == "__main__":
    main()
