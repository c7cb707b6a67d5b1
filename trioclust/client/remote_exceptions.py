"""Re-raising a task's remote exception here, with its remote traceback."""

from __future__ import annotations

from typing import Any, NoReturn

import tblib

from trioclust.protocol import Serialized


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
