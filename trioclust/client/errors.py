"""Errors a client call can raise, and re-raising a task's remote exception."""

from __future__ import annotations

import concurrent.futures
from typing import Any, NoReturn

import tblib

from trioclust.protocol import Serialized


class FutureCancelledError(concurrent.futures.CancelledError):
    """The future was cancelled (``future.cancel()``, ``client.cancel``, or the client closed).

    A subclass of :class:`concurrent.futures.CancelledError` (an ``Exception``,
    so it never looks like the event loop cancelling a task).
    """

    def __init__(self, key: str, reason: str = "") -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"Future {self.key!r} was cancelled{why}"


class SchedulerLostError(ConnectionError):
    """The client's connection to its scheduler broke; its pending futures fail with this."""


def rebuild_exception(exception: Any, traceback: Any, text: str) -> BaseException:
    """The remote exception as a local object, with its remote traceback attached."""
    exc: BaseException
    if isinstance(exception, Serialized):
        try:
            exc = exception.deserialize()
        except Exception as load_error:
            exc = RuntimeError(f"{text} (the exception could not be unpickled here: {load_error})")
    elif isinstance(exception, BaseException):
        exc = exception
    else:
        exc = RuntimeError(text or "remote task failed")
    if isinstance(traceback, dict):
        try:
            exc = exc.with_traceback(tblib.Traceback.from_dict(traceback).as_traceback())
        except Exception:
            pass
    return exc


def raise_remote(exception: Any, traceback: Any, text: str) -> NoReturn:
    """Raise the remote exception, its remote traceback shown first."""
    exc = rebuild_exception(exception, traceback, text)
    raise exc.with_traceback(exc.__traceback__)
