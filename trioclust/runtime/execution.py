"""Running one task's user code and packing its outcome for the wire.

Everything here runs on a worker thread (or, for coroutine functions, in the
worker's event loop) and never touches the worker's state: the outcome goes
back to the event loop as a plain value.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tblib

from trioclust.protocol import Serialized, serialize


@dataclass(slots=True)
class Success:
    value: Any
    nbytes: int
    type_name: str
    inline: Serialized | None


@dataclass(slots=True)
class Failure:
    exception: Any  # Serialized exception
    traceback: Any  # tblib dict, plain msgpack data
    text: str


_BYTES_SIZED = 2**16  # bytes longer than this are sized, not pickled


def pack_success(value: Any, inline_limit: int) -> Success | Failure:
    """Measure (by pickling, which is free of copies for large buffers) and maybe inline.

    A value that cannot be pickled (it holds a lock, a socket, or nests too
    deep for the pickler) could never reach a client or another worker: it
    becomes the task's error, ``TypeError: Could not serialize object of
    type ...``, as in Dask.
    """
    type_name = type(value).__qualname__
    if type(value) is bytes and len(value) > max(inline_limit, _BYTES_SIZED):
        # its pickle is the bytes themselves and a 9-byte frame: sized without
        # copying them (a copy as big as the result, while the worker's memory
        # is being watched)
        return Success(value, len(value) + 9, type_name, None)
    try:
        s = serialize(value)
    except Exception as exc:
        return pack_failure(unserializable(value, exc), skip_frames=0)
    return Success(value, s.nbytes, type_name, s if s.nbytes <= inline_limit else None)


def unserializable(value: Any, cause: BaseException) -> TypeError:
    """The error of a result that cannot be pickled, naming its type and why."""
    why = f"{type(cause).__name__}: {cause}"
    seen: BaseException | None = cause
    while seen is not None:  # cloudpickle re-raises the RecursionError as a PicklingError
        if isinstance(seen, RecursionError):
            why = "it nests too deep to pickle"
            break
        seen = seen.__cause__ or seen.__context__
    error = TypeError(f"Could not serialize object of type {type(value).__qualname__} ({why})")
    error.__cause__ = cause
    return error


def pack_failure(exc: BaseException, skip_frames: int = 1) -> Failure:
    """The exception, pickled (or a stand-in if it will not pickle), and its traceback."""
    text = f"{type(exc).__name__}: {exc}"
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        s = serialize(exc.with_traceback(None))
        pickle.loads(s.frames[0], buffers=s.frames[1:])  # it must also come back
    except Exception:
        s = serialize(RuntimeError(f"{text} (the original exception could not be pickled)"))
    try:
        tb_data = tblib.Traceback(tb).as_dict() if tb is not None else None
    except Exception:
        tb_data = None
    return Failure(s, tb_data, text)


def run_sync(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], inline_limit: int) -> Success | Failure:
    """Call a plain function; never raises."""
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        return pack_failure(exc)
    return pack_success(value, inline_limit)


async def call_function(msg: Mapping[str, Any], server: object, names: tuple[str, ...]) -> Any:
    """Call ``msg["function"](*args, **kwargs)`` for ``client.run`` and ``run_on_scheduler``.

    A function with a parameter named in ``names`` (``dask_worker``,
    ``worker``, ...) gets ``server`` there, as in dask. Coroutines are awaited.
    """
    fn, args, kwargs = (
        value.deserialize() if isinstance(value, Serialized) else value
        for value in (msg["function"], msg.get("args"), msg.get("kwargs"))
    )
    if not callable(fn):
        raise TypeError(f"expected a function to call, got {fn!r}")
    kwargs = dict(kwargs or {})
    try:
        params: Any = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    for name in names:
        if name in params:
            kwargs[name] = server
            break
    result = fn(*(args or ()), **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result
