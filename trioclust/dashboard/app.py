"""The dashboard's ASGI application: the routes and what each one returns.

The app only reads the scheduler; it is served by hypercorn on the
scheduler's own trio loop (see :mod:`trioclust.dashboard.server`), so every
handler runs between two of the scheduler's events and sees a consistent
state without locks. Handlers do no I/O beyond answering, and the page's
files are read once, when the app is made.
"""

from __future__ import annotations

import importlib.resources
import math
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route, WebSocketRoute

from trioclust import config
from trioclust.dashboard import graph as graph_view
from trioclust.dashboard import snapshot
from trioclust.dashboard.info import worker_page
from trioclust.dashboard.prometheus import CONTENT_TYPE, render_metrics
from trioclust.dashboard.snapshot import SchedulerView
from trioclust.dashboard.task_stream import TaskStream
from trioclust.transport import ConnectionHandler

__all__ = ["JSON_ROUTES", "create_app"]

#: The JSON documents served under ``/json/``, with what each holds.
JSON_ROUTES = {
    "status": (
        "everything the /status page shows, in one document (?since=<task run id>;"
        " &resolution=<seconds>: runs merged into spans, as the page asks)"
    ),
    "workers": "the connected workers: threads, memory, tasks processing and stored",
    "tasks": "how many tasks are in each state",
    "progress": "per key prefix, how many tasks are in each state",
    "task-stream": "recent task runs (?since=<id>&n=<count>), runs under way, totals",
    "identity": "what client.scheduler_info() returns",
    "graph": "the current task graph: per task, or per key prefix beyond 500 tasks",
}

_NO_STORE = {"Cache-Control": "no-store"}
_ASSETS = {
    "status.js": "text/javascript; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}


def _read_asset(name: str) -> str:
    return importlib.resources.files("trioclust.dashboard").joinpath("static", name).read_text("utf-8")


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return max(0, int(text))
    except ValueError:
        return default


def _resolution_param(request: Request) -> float | None:
    """The ``resolution`` query parameter: seconds, at least 0; None if absent or not a number."""
    text = request.query_params.get("resolution")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and math.isfinite(value) else None


def create_app(
    scheduler: SchedulerView, stream: TaskStream, *, comm_handler: ConnectionHandler | None = None
) -> Starlette:
    """Make the dashboard's ASGI app for one scheduler.

    Args:
        scheduler: The scheduler to show (``trioclust.Scheduler``).
        stream: The task stream recorder the scheduler feeds.
        comm_handler: When given, websocket connections to
            :data:`~trioclust.dashboard.websocket_comm.COMM_PATH` are handed
            to it as byte streams (the scheduler's comms).

    Returns:
        A Starlette app serving ``/status``, ``/health``, ``/metrics`` and
        ``/json/<name>`` (see :data:`JSON_ROUTES`), and the comm route.
    """
    refresh_ms = round(config.get_float("dashboard.refresh-interval") * 1000)
    stream_length = config.get_int("dashboard.page-stream-length")
    page = _read_asset("status.html").replace("{{refresh_ms}}", str(refresh_ms))
    graph_page = _read_asset("graph.html").replace("{{refresh_ms}}", str(refresh_ms))
    assets = {name: (_read_asset(name), kind) for name, kind in _ASSETS.items()}
    # walks every task, reading the prefix of each new one (about a
    # microsecond): recomputed at most every other refresh, and reused for
    # twenty times what it cost, so neither a huge graph nor a fast stream of
    # short tasks makes a page slow the scheduler down (scenario c watched:
    # the scheduler's loop spent about 3% of its time here at every poll)
    prefixes = snapshot.PrefixMemo()  # of the tasks held and the new runs, for every poll
    progress = snapshot.Throttled(
        lambda: snapshot.progress(scheduler, prefixes=prefixes),
        min_interval=2 * refresh_ms / 1000, slack=20,
    )

    graph = snapshot.Throttled(
        lambda: graph_view.graph(scheduler), min_interval=refresh_ms / 1000
    )

    # what /json/status says besides the task stream (workers, task counts,
    # progress) is the same for every reader: dumped once and shared by the
    # polls that come within a quarter of a refresh (several pages open)
    status_parts = snapshot.Throttled(
        lambda: snapshot.dumps(snapshot.status_parts(scheduler, progress()[:50])),
        min_interval=refresh_ms / 4000,
    )

    def json(data: Any) -> JSONResponse:
        return JSONResponse(data, headers=_NO_STORE)

    def json_text(text: str) -> Response:
        return Response(text, media_type="application/json", headers=_NO_STORE)

    async def status_page(request: Request) -> Response:
        return HTMLResponse(page, headers=_NO_STORE)

    async def graph_route(request: Request) -> Response:
        return HTMLResponse(graph_page, headers=_NO_STORE)

    async def worker_info(request: Request) -> Response:
        address = request.path_params["address"]
        text = await worker_page(scheduler, address, refresh_ms / 1000 * 4)
        if text is None:
            return PlainTextResponse(f"No worker {address} is connected", status_code=404)
        return HTMLResponse(text, headers=_NO_STORE)

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(found[0], media_type=found[1], headers=_NO_STORE)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(scheduler, stream), headers={"Content-Type": CONTENT_TYPE})

    async def json_index(request: Request) -> Response:
        return json({f"/json/{name}": text for name, text in JSON_ROUTES.items()})

    async def json_document(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "status":
            since = _int_param(request, "since", 0) or 0
            return json_text(
                snapshot.status_json(
                    scheduler, stream, stream_length=stream_length, since=since,
                    parts=status_parts(), resolution=_resolution_param(request), prefixes=prefixes,
                )
            )
        if name == "workers":
            return json(snapshot.workers(scheduler))
        if name == "tasks":
            return json(snapshot.task_counts(scheduler))
        if name == "progress":
            return json(progress()[: _int_param(request, "n", None)])
        if name == "task-stream":
            since = _int_param(request, "since", 0) or 0
            return json_text(snapshot.task_stream_json(stream, _int_param(request, "n", None), since))
        if name == "graph":
            return json(graph())
        if name == "identity":
            identity = getattr(scheduler, "identity", None)
            return json(identity() if callable(identity) else {"id": scheduler.id})
        return JSONResponse(
            {"error": f"no /json/{name}; there are {sorted(JSON_ROUTES)}"}, status_code=404
        )

    async def root(request: Request) -> Response:
        return RedirectResponse("status")

    routes: list[BaseRoute] = [
        Route("/", root),
        Route("/status", status_page),
        Route("/graph", graph_route),
        Route("/info/worker/{address:path}", worker_info),
        Route("/static/{name}", asset),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/json", json_index),
        Route("/json/{name}", json_document),
    ]
    if comm_handler is not None:
        from trioclust.dashboard.websocket_comm import COMM_PATH, comm_endpoint

        routes.append(WebSocketRoute(COMM_PATH, comm_endpoint(comm_handler)))
    return Starlette(routes=routes)
