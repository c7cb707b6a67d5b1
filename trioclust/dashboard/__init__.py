"""The scheduler's dashboard: ``/status`` for people, ``/metrics`` and ``/json/`` for tools.

``serve_dashboard(scheduler, ":8787", task_status=...)`` serves it in a trio
nursery; :class:`TaskStream` is the recorder the scheduler feeds so the page
can show the work done.

The web stack (hypercorn, starlette) takes a few tenths of a second to
import, so only :class:`TaskStream` is imported eagerly: a scheduler can
record its task stream without loading a web server it may never start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trioclust.dashboard.task_stream import TaskRecord, TaskStream, key_prefix

if TYPE_CHECKING:
    from trioclust.dashboard.app import JSON_ROUTES, create_app
    from trioclust.dashboard.server import parse_dashboard_address, serve_dashboard
    from trioclust.dashboard.websocket_comm import COMM_PATH

__all__ = [
    "COMM_PATH",
    "JSON_ROUTES",
    "TaskRecord",
    "TaskStream",
    "create_app",
    "key_prefix",
    "parse_dashboard_address",
    "serve_dashboard",
]

_LAZY = {
    "COMM_PATH": "trioclust.dashboard.websocket_comm",
    "JSON_ROUTES": "trioclust.dashboard.app",
    "create_app": "trioclust.dashboard.app",
    "parse_dashboard_address": "trioclust.dashboard.server",
    "serve_dashboard": "trioclust.dashboard.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trioclust.dashboard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
