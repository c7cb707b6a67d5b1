"""The task stream from the client's side: ``client.get_task_stream()``.

The scheduler keeps a bounded record of finished task runs (see
``trioclust/dashboard/task_stream.py``), each with the times the worker
measured. ``client.get_task_stream(...)`` returns a :class:`TaskStreamRecording`,
which is both

* a query: its ``data`` (and iterating over it) asks the scheduler, once,
  for the runs that stopped between ``start`` and ``stop``, the newest
  ``count``; ``await`` it with an asynchronous client to get that list; and
* a recorder: ``with client.get_task_stream() as ts:`` (``async with`` for an
  asynchronous client) notes the id of the newest run on entry and, on exit,
  fetches every run that finished in between into ``ts.data``. Ids, not
  clocks, bound the recording, so nothing is lost or counted twice.

Each record is a dict with Dask's fields (``key``, ``worker``, ``thread``,
``startstops`` of ``{"action", "start", "stop"}``, ``status``, ``nbytes``) and
two of trioclust's (``id``, ``prefix``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from trioclust.client.client import Client

__all__ = ["TaskStreamRecording", "as_log", "parse_since"]

_AGO = re.compile(r"\s*([0-9.]+)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_since(value: float | str | None, now: float | None = None) -> float | None:
    """A time as seconds since the epoch: a number as it is, or a string such
    as ``"10s"`` or ``"5m"`` meaning that long ago (as in Dask)."""
    if value is None or isinstance(value, int | float):
        return value
    match = _AGO.fullmatch(value)
    if match is None:
        raise ValueError(f"expected a timestamp or a duration such as '10s' or '5m', got {value!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return (now if now is not None else time.time()) - seconds


class TaskStreamRecording:
    """Finished task runs, queried or recorded (see the module's notes).

    Made by :meth:`Client.get_task_stream`; ``data`` is a list of dicts with
    Dask's task stream fields.
    """

    def __init__(
        self, client: Client, start: float | str | None = None, stop: float | str | None = None,
        count: int | None = None,
    ) -> None:
        self._client = client
        self._start = parse_since(start)
        self._stop = parse_since(stop)
        self._count = count
        self._since: int | None = None
        self._data: list[dict[str, Any]] | None = None
        #: When recording began and ended, on the scheduler's clock (None until then).
        self.started: float | None = None
        self.stopped: float | None = None

    def __repr__(self) -> str:
        state = f"{len(self._data)} runs" if self._data is not None else "not fetched"
        return f"<TaskStreamRecording {state}>"

    # ----------------------------------------------------------- query
    async def _query(self) -> list[dict[str, Any]]:
        reply = await self._client._core.request(
            "get-task-stream", start=self._start, stop=self._stop, count=self._count
        )
        self._data = list(reply["records"])
        return self._data

    @property
    def data(self) -> list[dict[str, Any]]:
        """The runs: those recorded by the ``with`` block, or the query's answer."""
        if self._data is None:
            if self._client.asynchronous:
                raise RuntimeError(
                    "With an asynchronous client, use 'await client.get_task_stream(...)' or "
                    "'async with client.get_task_stream() as ts' before reading ts.data"
                )
            self._client._sync(self._query)
        assert self._data is not None
        return self._data

    def __await__(self) -> Generator[Any, None, list[dict[str, Any]]]:
        return self._query().__await__()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.data[index]

    # ----------------------------------------------------------- record
    async def _begin(self) -> None:
        reply = await self._client._core.request("get-task-stream", count=0)
        self._since = int(reply["last_id"])
        self.started = float(reply["time"])
        self._data = None

    async def _end(self) -> None:
        assert self._since is not None
        reply = await self._client._core.request(
            "get-task-stream", since=self._since, count=self._count
        )
        self.stopped = float(reply["time"])
        self._data = list(reply["records"])

    def __enter__(self) -> Self:
        self._client._sync(self._begin)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client._sync(self._end)

    async def __aenter__(self) -> Self:
        await self._begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._end()


def as_log(rows: Any) -> list[tuple[str, str]]:
    """``[[level, line], ...]`` from the wire as Dask's ``[(level, line), ...]``."""
    return [(str(level), str(line)) for level, line in rows]
