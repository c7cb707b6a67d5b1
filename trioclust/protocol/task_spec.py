"""Placeholders for futures passed as task arguments, and their substitution.

When a client submits ``f(x, [y, 1])`` where ``x`` and ``y`` are futures, it
puts a :class:`TaskRef` where each future was. The scheduler reads the
dependencies with :func:`collect_refs`; the worker, once it holds the
dependencies' values, calls :func:`substitute` to put them back.

Only exact ``list``, ``tuple`` and ``dict`` (values, not keys) are walked;
other containers, subclasses included, are left as they are. Both functions
return quickly when there is nothing to find: :func:`substitute` returns its
argument itself, not a copy, when it contains no :class:`TaskRef`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trioclust.protocol.messages import Key

__all__ = ["TaskRef", "collect_refs", "substitute"]


@dataclass(frozen=True, slots=True)
class TaskRef:
    """Stands for the value of task ``key`` inside a task's arguments.

    Attributes:
        key: the key of the task whose result goes here.
    """

    key: Key


_CONTAINERS = frozenset({list, tuple, dict, TaskRef})


def substitute(obj: Any, data: Mapping[Key, Any]) -> Any:
    """Replace every :class:`TaskRef` inside ``obj`` by ``data[ref.key]``.

    Args:
        obj: a value, possibly a nest of lists, tuples and dicts.
        data: the values of the referenced tasks, by key.

    Returns:
        ``obj`` itself when it holds no reference, else a copy of the
        containers on the path to each reference (tuples stay tuples).

    Raises:
        KeyError: a referenced key is missing from ``data``.
    """
    typ = type(obj)
    if typ is TaskRef:
        try:
            return data[obj.key]
        except KeyError:
            raise KeyError(f"no value for dependency {obj.key!r} of this task") from None
    if typ is dict:
        replaced: dict[Any, Any] | None = None
        for k, v in obj.items():
            if type(v) in _CONTAINERS:
                new = substitute(v, data)
                if new is not v:
                    if replaced is None:
                        replaced = dict(obj)
                    replaced[k] = new
        return obj if replaced is None else replaced
    if typ is list or typ is tuple:
        items: list[Any] | None = None
        for i, v in enumerate(obj):
            if type(v) in _CONTAINERS:
                new = substitute(v, data)
                if new is not v:
                    if items is None:
                        items = list(obj)
                    items[i] = new
        if items is None:
            return obj
        return items if typ is list else tuple(items)
    return obj


def _collect(obj: Any, keys: set[Key]) -> None:
    typ = type(obj)
    if typ is TaskRef:
        keys.add(obj.key)
    elif typ is dict:
        for v in obj.values():
            if type(v) in _CONTAINERS:
                _collect(v, keys)
    elif typ is list or typ is tuple:
        for v in obj:
            if type(v) in _CONTAINERS:
                _collect(v, keys)


def collect_refs(obj: Any) -> set[Key]:
    """The keys of every :class:`TaskRef` inside ``obj``.

    Args:
        obj: a value, possibly a nest of lists, tuples and dicts.
    """
    keys: set[Key] = set()
    if type(obj) in _CONTAINERS:
        _collect(obj, keys)
    return keys
