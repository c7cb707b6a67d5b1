"""``progress(futures)``: live progress bars, one per key prefix, as in Dask.

The bars are tqdm's. tqdm rather than rich: it is small and has no
dependencies of its own, it has been kept up for a decade, and one library
covers both places a user looks: ``tqdm.std`` draws in a terminal (or any
stream), and ``tqdm.notebook`` shows the same bars as ipywidgets in Jupyter.
rich would be a larger dependency for the terminal alone.

Progress is followed on the client, from the futures' own states: each future
is watched with a done callback in the client's event loop (as
:class:`~trioclust.as_completed` does), so following progress costs the
scheduler nothing. In a terminal :func:`progress` blocks until every future
is done (``await`` it with an asynchronous client); in a notebook it shows
the widgets and returns at once, the callbacks moving the bars.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from trioclust.client.collections import futures_of
from trioclust.client.futures import Future
from trioclust.client.waiting import as_completed
from trioclust.dashboard.task_stream import key_prefix

__all__ = ["progress"]


def _futures_of(objects: Iterable[Any], out: list[Future]) -> None:
    for obj in objects:
        if isinstance(obj, Future):
            out.append(obj)
        elif isinstance(obj, dict):
            _futures_of(obj.values(), out)
        elif isinstance(obj, list | tuple | set | frozenset):
            _futures_of(obj, out)
        elif hasattr(obj, "__dask_graph__"):
            held = futures_of(obj)  # a persisted collection is backed by futures
            if not held:
                raise TypeError(
                    "progress() follows futures: persist the collection first "
                    "(client.persist(x)) and pass what that returns"
                )
            out.extend(held)
        else:
            raise TypeError(f"progress() expects futures (or lists/dicts of them), got {obj!r}")


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


class _Bars:
    """One bar per prefix (or one for all), moved as futures finish."""

    def __init__(
        self, futures: list[Future], *, multi: bool, complete: bool, notebook: bool, file: TextIO | None
    ) -> None:
        if notebook:
            from tqdm.notebook import tqdm as base  # type: ignore[import-untyped]
        else:
            from tqdm import tqdm as base  # type: ignore[import-untyped]

        class tqdm(base):  # type: ignore[misc,valid-type]
            # no tqdm_monitor thread: it outlives the bars, and these are
            # moved by every finished future anyway
            monitor_interval = 0
        finished = [f.done() for f in futures]  # once: a future may finish meanwhile
        self.pending = [f for f, done in zip(futures, finished, strict=True) if not done]
        counted = futures if complete else self.pending
        groups: dict[str, int] = {}
        for future in counted:
            prefix = key_prefix(future.key) if multi else "all"
            groups[prefix] = groups.get(prefix, 0) + 1
        width = max((len(p) for p in groups), default=3)
        self.bars: dict[str, Any] = {}
        for position, (prefix, total) in enumerate(groups.items()):
            self.bars[prefix] = tqdm(
                total=total, desc=prefix.ljust(width), position=position, leave=True,
                file=file, unit="task", dynamic_ncols=True, mininterval=0.1,
            )
        self.multi = multi
        self.erred: dict[str, int] = {}
        if complete:
            for future, done in zip(futures, finished, strict=True):
                if done:
                    self.update(future)

    def update(self, future: Future) -> None:
        prefix = key_prefix(future.key) if self.multi else "all"
        bar = self.bars.get(prefix)
        if bar is None:
            return
        if future.status == "error":
            self.erred[prefix] = self.erred.get(prefix, 0) + 1
            bar.set_postfix(erred=self.erred[prefix], refresh=False)
        bar.update(1)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.refresh()
        for bar in reversed(list(self.bars.values())):
            bar.close()


def progress(
    *futures: Any,
    notebook: bool | None = None,
    multi: bool = True,
    complete: bool = True,
    file: TextIO | None = None,
) -> Any:
    """Show progress bars for futures, one per key prefix, until they are done.

    Args:
        *futures: futures, or lists, tuples, sets or dicts of them (of one client).
        notebook: show ipywidgets bars (Jupyter, with ipywidgets installed)
            instead of text bars; None: when running in a Jupyter kernel.
        multi: one bar per key prefix (``inc``, ``add``, ...); False: one bar.
        complete: count the futures already done too (True), or only the
            remaining ones (False).
        file: where text bars go; default ``sys.stderr``.

    Returns:
        In a terminal, None once every future is done (an awaitable with an
        asynchronous client); in a notebook, at once, the bars (tqdm widgets)
        by prefix, which move as futures finish.
    """
    found: list[Future] = []
    _futures_of(futures, found)
    found = list(dict.fromkeys(found))  # the same future twice counts once
    if notebook is None:
        notebook = _in_notebook()
    if notebook:
        return _notebook_progress(found, multi=multi, complete=complete)
    asynchronous = bool(found) and found[0].client.asynchronous
    bars = _Bars(found, multi=multi, complete=complete, notebook=False, file=file)
    if asynchronous:
        return _follow_async(bars)
    try:
        for future in as_completed(bars.pending):
            bars.update(future)
    finally:
        bars.close()
    return None


async def _follow_async(bars: _Bars) -> None:
    try:
        async for future in as_completed(bars.pending):
            bars.update(future)
    finally:
        bars.close()


def _notebook_progress(futures: list[Future], *, multi: bool, complete: bool) -> dict[str, Any]:
    try:
        import ipywidgets  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: F401
    except ImportError:
        raise ImportError(
            "progress(notebook=True) needs ipywidgets: pip install ipywidgets"
        ) from None
    bars = _Bars(futures, multi=multi, complete=complete, notebook=True, file=None)
    remaining = len(bars.pending)

    def done(future: Future) -> None:  # in the client's event loop thread
        nonlocal remaining
        bars.update(future)
        remaining -= 1
        if remaining == 0:
            bars.close()

    if not bars.pending:
        bars.close()
    for future in bars.pending:
        future.add_done_callback(done)
    return bars.bars
