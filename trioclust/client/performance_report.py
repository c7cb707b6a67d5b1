"""``with performance_report(filename="report.html"): ...``, as in Dask.

On entry the report notes the id of the scheduler's newest task run and the
scheduler's time, and reads the source of the code around the ``with``
statement. On exit it asks the scheduler for the runs finished since that id
(with the workers' timings), the workers' heartbeats since that time (CPU and
memory), and ``scheduler_info()``, and writes one HTML file drawn by
:mod:`trioclust.client.report_html`. The scheduler keeps these records
anyway, bounded, so recording a report costs the work nothing; a report of
more runs than ``dashboard.task-stream-length`` shows only the newest.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Self

import anyio

from trioclust.client.report_html import render_report
from trioclust.client.worker_client import get_client

if TYPE_CHECKING:
    from trioclust.client.client import Client

__all__ = ["performance_report"]


def _source_of(frame: FrameType | None) -> str:
    if frame is None:
        return ""
    try:
        return inspect.getsource(frame)
    except (OSError, TypeError):
        return ""


class performance_report:
    """Record the work done inside a ``with`` block into one HTML file.

    The file holds the task stream, progress by key prefix, the workers' CPU
    and memory over time, the slowest tasks, the transfers between workers,
    and the code that ran; it loads nothing from the network.

    Args:
        filename: where to write the report.
        client: the client whose cluster to record; default the current one
            (:func:`~trioclust.get_client`: the newest running client of this
            process, or the task's client inside a task).
        stacklevel: which caller's code to include (1: the code around the
            ``with`` statement).
        title: the report's title.

    Use ``with`` with a synchronous client, ``async with`` with an
    asynchronous one.
    """

    def __init__(
        self, filename: str | Path = "dask-report.html", *, client: Client | None = None,
        stacklevel: int = 1, title: str = "trioclust performance report",
    ) -> None:
        self.filename = Path(filename)
        self.client = client
        self.stacklevel = stacklevel
        self.title = title
        self._since = 0
        self._start = 0.0
        self._code = ""

    def _client(self) -> Client:
        if self.client is None:
            self.client = get_client()
        assert self.client is not None
        return self.client

    def _capture_code(self) -> None:
        frame = inspect.currentframe()
        # this method, then __enter__/__aenter__, then the caller's frames
        for _ in range(self.stacklevel + 1):
            frame = frame.f_back if frame is not None else None
        self._code = _source_of(frame)

    async def _begin(self) -> None:
        reply = await self._client()._core.request("get-task-stream", count=0)
        self._since = int(reply["last_id"])
        self._start = float(reply["time"])

    async def _end(self) -> None:
        client = self._client()
        core = client._core
        stream = await core.request("get-task-stream", since=self._since)
        history = await core.request("get-worker-history", start=self._start)
        info = await core.request("scheduler-info")
        page = render_report(
            records=stream["records"], history=history, info=info, start=self._start,
            stop=float(stream["time"]), code=self._code, title=self.title,
        )
        await anyio.Path(self.filename).write_text(page, encoding="utf-8")

    def __enter__(self) -> Self:
        self._capture_code()
        self._client()._sync(self._begin)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client()._sync(self._end)

    async def __aenter__(self) -> Self:
        self._capture_code()
        await self._begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._end()

    def __repr__(self) -> str:
        return f"<performance_report {str(self.filename)!r}>"
