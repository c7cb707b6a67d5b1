"""What a task runs, as it travels: ``[pickled function, pickled (args, kwargs)]``.

The function travels as its own ``Serialized``, pickled once per function on
the client (a ``map`` of 10,000 tasks pickles its function once, not 10,000
times) and unpickled once per distinct pickle on the worker. Both caches are
small LRUs; the client's keeps a reference to each function it caches, so an
``id`` is never reused while it is a key. As in dask, a function's pickle is
taken the first time it is submitted: change a function's globals afterwards
and define a new function rather than resubmitting the old one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from trioclust.protocol.serialize import Serialized, serialize

__all__ = ["dumps_task", "loads_task", "run_graph_node"]

_CACHE_SIZE = 256
_lock = threading.Lock()
_pickled: OrderedDict[int, tuple[Callable[..., Any], Serialized]] = OrderedDict()
_loaded: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()


def _pickled_function(fn: Callable[..., Any]) -> Serialized:
    with _lock:
        entry = _pickled.get(id(fn))
        if entry is not None and entry[0] is fn:
            _pickled.move_to_end(id(fn))
            return entry[1]
    pickled = serialize(fn)
    with _lock:
        _pickled[id(fn)] = (fn, pickled)
        if len(_pickled) > _CACHE_SIZE:
            _pickled.popitem(last=False)
    return pickled


def run_graph_node(node: Any, values: dict[Any, Any]) -> Any:
    """Run one node of a dask graph (``dask._task_spec``'s Task, Alias,
    DataNode, ...) given its dependencies' values by key.

    A dask graph's task travels as ``dumps_task(run_graph_node, (node,
    {dep: TaskRef(dep), ...}), {})``: the worker puts the values in place of
    the refs as for any task, and this calls the node, which needs nothing
    else. Only the worker that unpickles the node imports dask.
    """
    return node(values)


def dumps_task(fn: Callable[..., Any], args: Any, kwargs: Any) -> list[Serialized]:
    """The run_spec of ``fn(*args, **kwargs)`` (futures already replaced by TaskRefs)."""
    return [_pickled_function(fn), serialize((args, kwargs))]


def loads_task(spec: Any) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """``(function, args, kwargs)`` back from a run_spec made by :func:`dumps_task`.

    Raises:
        TypeError: the spec is not a run_spec.
    """
    if not (isinstance(spec, list | tuple) and len(spec) == 2):
        raise TypeError(f"not a task's run_spec: {type(spec).__name__}")
    pickled_fn, pickled_args = spec
    if not isinstance(pickled_fn, Serialized) or not isinstance(pickled_args, Serialized):
        raise TypeError("a task's run_spec holds two pickled values")
    key = bytes(pickled_fn.frames[0]) if len(pickled_fn.frames) == 1 else b""
    fn = _loaded.get(key) if key else None
    if fn is None:
        fn = pickled_fn.deserialize()
        if key:
            with _lock:
                _loaded[key] = fn
                if len(_loaded) > _CACHE_SIZE:
                    _loaded.popitem(last=False)
    args, kwargs = pickled_args.deserialize()
    return fn, tuple(args), dict(kwargs or {})
