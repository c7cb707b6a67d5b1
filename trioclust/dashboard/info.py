"""``/info/worker/<address>``: one worker's numbers and its recent log lines.

A plain HTML page, written here and refreshed by the browser every few
seconds (``<meta http-equiv="refresh">``), with no script. The log lines are
asked from the worker itself over the scheduler's link to it (the worker's
``get-logs`` request), bounded by a short timeout so that a stuck worker
cannot hold the page up.
"""

from __future__ import annotations

import html
from typing import Any

import trio

from trioclust.dashboard import snapshot
from trioclust.dashboard.snapshot import SchedulerView
from trioclust.errors import CommClosedError, RemoteError
from trioclust.sizes import format_bytes

__all__ = ["worker_page"]

_LOG_LINES = 200
_LOG_TIMEOUT = 2.0  # seconds to wait for a worker's log lines


async def _worker_logs(scheduler: SchedulerView, address: str) -> list[Any] | str:
    link = getattr(scheduler, "worker_links", {}).get(address)
    if link is None:
        return "(not connected)"
    with trio.move_on_after(_LOG_TIMEOUT):
        try:
            return list(await link.request("get-logs", n=_LOG_LINES))
        except (CommClosedError, RemoteError) as exc:
            return f"(could not get its logs: {exc})"
    return f"(no answer within {_LOG_TIMEOUT:g} s)"


async def worker_page(scheduler: SchedulerView, address: str, refresh_s: float) -> str | None:
    """The page's HTML, or None when no such worker is connected."""
    worker = next((w for w in snapshot.workers(scheduler) if w["address"] == address), None)
    if worker is None:
        return None
    logs = await _worker_logs(scheduler, address)
    log_text = logs if isinstance(logs, str) else "\n".join(str(line) for _, line in logs)
    managed = int(worker["managed"])
    rows = [
        ("Name", worker["name"]),
        ("Address", address),
        ("Threads", worker["nthreads"]),
        ("CPU", f"{worker['cpu']:.0f} %"),
        ("Memory (process)", format_bytes(int(worker["memory"]))),
        ("Managed (results held)", format_bytes(managed)),
        ("Unmanaged", format_bytes(max(int(worker["memory"]) - managed, 0))),
        ("Spilled to disk", format_bytes(int(worker["spilled"]))),
        ("Memory limit", format_bytes(int(worker["memory_limit"])) if worker["memory_limit"] else "none"),
        ("Processing", worker["processing"]),
        ("Executing", worker["executing"]),
        ("Results stored", worker["stored"]),
    ]
    table = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    title = html.escape(f"Worker {worker['name']}")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{max(refresh_s, 1):g}">'
        f'<title>{title}</title><link rel="stylesheet" href="../../static/status.css"></head><body>'
        f'<header><div class="brand">trioclust <span>worker</span></div>'
        f'<nav><a href="../../status">status</a><a href="../../graph">graph</a></nav></header><main>'
        f'<section class="card" id="worker-info"><h2>{title}</h2><table>{table}</table></section>'
        f'<section class="card" id="worker-logs"><h2>Logs (newest last)</h2>'
        f'<pre class="logs">{html.escape(log_text) or "(none yet)"}</pre></section>'
        f"</main></body></html>"
    )
