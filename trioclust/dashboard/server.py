"""``serve_dashboard``: the dashboard's HTTP service, on the scheduler's trio loop.

The app (:func:`trioclust.dashboard.app.create_app`) is served by hypercorn's
trio worker in the caller's nursery, so it lives and dies with the scheduler.
We bind the listening socket ourselves, before handing it to hypercorn as an
``fd://`` bind: that is how a taken port is noticed up front and replaced by a
free one, with a ``UserWarning`` (Dask's words) and a log line that name both,
and how the address reported to the caller is always the one that really
serves.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import ssl
import warnings
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from trioclust import config
from trioclust.dashboard.app import create_app
from trioclust.dashboard.snapshot import SchedulerView
from trioclust.dashboard.task_stream import TaskStream
from trioclust.transport import ConnectionHandler
from trioclust.transport.addresses import parse_address, parse_host_port, unparse_host_port

__all__ = ["parse_dashboard_address", "serve_dashboard"]

logger = logging.getLogger("trioclust.dashboard")

# hypercorn's own lines ("Running on ... (CTRL + C to quit)") are noise inside a
# scheduler: keep its errors, drop its info unless someone asks for them.
_http_logger = logging.getLogger("trioclust.dashboard.http")
if _http_logger.level == logging.NOTSET:
    _http_logger.setLevel(logging.WARNING)

_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def parse_dashboard_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split a dashboard address into host and port.

    Accepts ``":8787"`` (``default_host``), ``"8787"``, ``"host:port"``,
    ``"[::1]:8787"`` and ``"http://host:port"``.

    Raises:
        ValueError: the address is malformed; the message shows a good one.
    """
    text = address.strip()
    if text.startswith("http://"):
        text = text.removeprefix("http://").rstrip("/")
    if text.isdigit():
        text = ":" + text
    if text.startswith(":"):
        text = unparse_host_port(default_host, 0)[: -len(":0")] + text
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise ValueError(
            f"Invalid dashboard address {address!r}: {exc}. "
            "Expected something like ':8787' or '127.0.0.1:8787'"
        ) from None


def _scheduler_host(scheduler: SchedulerView) -> str:
    try:
        scheme, location = parse_address(scheduler.address)
        if scheme in ("tcp", "tls", "ws", "wss", "ucx"):
            return parse_host_port(location)[0]
    except ValueError:
        pass
    return "127.0.0.1"


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET  # a host name: resolved by bind, IPv4


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _link(host: str, port: int, scheme: str = "http") -> str:
    shown = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    return f"{scheme}://" + unparse_host_port(shown, port)


class _HyperConfig(Config):
    """hypercorn's configuration, with an ``ssl.SSLContext`` we built ourselves.

    hypercorn builds its context from certificate *files*; ours come from
    :class:`~trioclust.security.Security` (files or PEM text), with the
    cluster's CA required of every peer.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._trioclust_ssl = ssl_context

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._trioclust_ssl

    @property
    def ssl_enabled(self) -> bool:
        return self._trioclust_ssl is not None


def _bind_or_fallback(host: str, port: int) -> socket.socket:
    try:
        return _bind(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise OSError(
                exc.errno, f"The dashboard cannot listen on {unparse_host_port(host, port)}: {exc.strerror}"
            ) from exc
    sock = _bind(host, 0)
    actual = sock.getsockname()[1]
    logger.warning(
        "Port %d is in use; the dashboard serves on %s/status instead", port, _link(host, actual)
    )
    # Dask's warning, word for word: a user sees it wherever the scheduler runs
    # in their process (their trio program, or the loop thread of a
    # LocalCluster: warnings are process-wide). A scheduler in a process of its
    # own prints it on that process's stderr, next to the log line above.
    warnings.warn(
        f"Port {port} is already in use.\n"
        "Perhaps you already have a cluster running?\n"
        f"Hosting the HTTP server on port {actual} instead",
        UserWarning,
        stacklevel=2,
    )
    return sock


async def serve_dashboard(
    scheduler: SchedulerView,
    address: str | None = None,
    *,
    task_stream: TaskStream | None = None,
    comm_handler: ConnectionHandler | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard of ``scheduler`` until cancelled.

    Start it with ``link = await nursery.start(serve_dashboard, scheduler, ":8787")``.
    If the port is taken, a free one is used instead, and a ``UserWarning``
    and a log line name both.

    Args:
        scheduler: The scheduler to show (``trioclust.Scheduler``).
        address: Where to listen: ``":8787"``, ``"host:port"``, port 0 for any
            free port; default from ``scheduler.dashboard-address``. An empty
            host means the scheduler's own host.
        task_stream: The recorder the scheduler feeds; default
            ``scheduler.task_stream``, else an empty one (no task stream).
        comm_handler: When given, websocket connections to ``/trioclust-comm``
            are handed to it (a scheduler speaking ``ws://`` passes its own,
            so that the dashboard's port takes comms too).
        ssl_context: When given, the dashboard speaks HTTPS (and ``wss://``)
            with this context: a ``wss://`` scheduler passes its own, which
            requires a certificate signed by the cluster's CA of every
            browser and client, as its own port does.
        task_status: Reports the address that really serves,
            ``"http://host:port"`` or ``"https://host:port"`` (the page is at
            ``<that>/status``).

    Raises:
        OSError: the address cannot be listened on for a reason other than
            its port being in use.
        ValueError: the address is malformed.
    """
    if address is None:
        address = str(config.get("scheduler.dashboard-address"))
    host, port = parse_dashboard_address(address, _scheduler_host(scheduler))
    if task_stream is None:
        found: Any = getattr(scheduler, "task_stream", None)
        task_stream = found if isinstance(found, TaskStream) else TaskStream()
    app = create_app(scheduler, task_stream, comm_handler=comm_handler)

    sock = _bind_or_fallback(host, port)
    link = _link(host, sock.getsockname()[1], "https" if ssl_context else "http")
    hyper = _HyperConfig(ssl_context)
    hyper.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the socket now
    hyper.accesslog = None
    hyper.errorlog = _http_logger
    hyper.include_server_header = False
    hyper.graceful_timeout = config.get_float("runtime.close-timeout")

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, app, hyper)
        logger.info("Dashboard at %s/status", link)
        task_status.started(link)
