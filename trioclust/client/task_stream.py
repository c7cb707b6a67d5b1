"""``with get_task_stream() as ts:``: Dask's module-level task stream recorder.

The same recording as ``client.get_task_stream()`` (see
:mod:`trioclust.client.diagnostics`), on the current client
(:func:`~trioclust.get_client`) unless one is given, with Dask's ``plot``
and ``filename``: Dask draws a Bokeh figure; trioclust draws the performance
report's task stream, an HTML page with inline SVG and nothing loaded from
the network.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio

from trioclust.client.diagnostics import TaskStreamRecording
from trioclust.client.report_html import render_task_stream
from trioclust.client.worker_client import get_client

if TYPE_CHECKING:
    from trioclust.client.client import Client

__all__ = ["get_task_stream"]


class get_task_stream:
    """Record the task runs that finish inside a ``with`` block (``dask.distributed.get_task_stream``).

    ``with get_task_stream() as ts: ...`` then ``ts.data``: a list of dicts
    with Dask's fields (``key``, ``worker``, ``thread``, ``startstops``,
    ``status``, ``nbytes``). Use ``async with`` with an asynchronous client.

    Args:
        client: the client whose cluster to record; default the current one
            (:func:`~trioclust.get_client`).
        plot: ``True``: after the block, ``ts.figure`` is the task stream
            drawn as a self-contained HTML page (text); ``"save"``: that page
            is also written to ``filename``.
        filename: where ``plot="save"`` writes the page.
    """

    def __init__(
        self, client: Client | None = None, plot: bool | Literal["save"] = False,
        filename: str | Path = "task-stream.html",
    ) -> None:
        self.client = client
        self.plot = plot
        self.filename = Path(filename)
        #: The page drawn when ``plot`` is set (None until the block ends).
        self.figure: str | None = None
        self._recording: TaskStreamRecording | None = None

    def __repr__(self) -> str:
        return f"<get_task_stream {self._recording!r}>"

    @property
    def data(self) -> list[dict[str, Any]]:
        """The runs that finished inside the block (empty before it ends)."""
        if self._recording is None or self._recording.stopped is None:
            return []
        return self._recording.data

    def _start(self) -> TaskStreamRecording:
        if self.client is None:
            self.client = get_client()
        self._recording = self.client.get_task_stream()
        self.figure = None
        return self._recording

    def _draw(self) -> bool:
        """Draws ``figure`` when asked to; whether there is a file to write."""
        recording = self._recording
        if not self.plot or recording is None or recording.started is None or recording.stopped is None:
            return False
        self.figure = render_task_stream(recording.data, recording.started, recording.stopped)
        return self.plot == "save"

    def __enter__(self) -> Self:
        self._start().__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._recording is not None
        self._recording.__exit__(exc_type, exc, tb)
        if self._draw():
            assert self.figure is not None
            self.filename.write_text(self.figure, encoding="utf-8")

    async def __aenter__(self) -> Self:
        await self._start().__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._recording is not None
        await self._recording.__aexit__(exc_type, exc, tb)
        if self._draw():
            assert self.figure is not None
            await anyio.Path(self.filename).write_text(self.figure, encoding="utf-8")
