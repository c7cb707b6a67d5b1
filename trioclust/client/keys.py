"""Task keys and argument packing for submit and map.

A pure task's key is ``<function name>-<hash of function and arguments>``, so
submitting the same call twice yields the same key (and one computation); an
impure one gets a random suffix. Futures inside the arguments (also nested in
lists, tuples and dicts) become :class:`TaskRef` placeholders plus dependency
keys; the worker puts their values back in.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from typing import Any

import cloudpickle

from trioclust.protocol.messages import Key
from trioclust.protocol.task_spec import TaskRef


def funcname(fn: Any) -> str:
    """A short, readable name for a function, used as the key's prefix."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if name == "<lambda>":
        return "lambda"
    return str(name)


def tokenize(*parts: Any) -> str:
    """A deterministic hash of picklable objects (futures already replaced by refs)."""
    try:
        blob = cloudpickle.dumps(parts, protocol=5)
    except Exception:
        return uuid.uuid4().hex  # unpicklable: submit will fail with a clear error anyway
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


# Unique suffixes for impure keys: 128 random bits, like a uuid4, from a
# generator seeded by the OS (uuid4 itself costs a system call per key, a
# tenth of the client's time in a large map). Reseeded in a forked child, so
# that parent and child never draw the same sequence.
_unique = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _unique.seed(os.urandom(32)))


def unique_suffix() -> str:
    """32 random hex digits."""
    return f"{_unique.getrandbits(128):032x}"


def make_key(fn: Any, args: Any, kwargs: Any, pure: bool) -> str:
    """``name-hash`` for pure tasks, ``name-<32 random hex digits>`` otherwise."""
    suffix = tokenize(fn, args, kwargs) if pure else unique_suffix()
    return f"{funcname(fn)}-{suffix[:32]}"


#: Types that never hold a future: returned as they are at once.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})


def pack_futures(obj: Any, future_type: type[Any], deps: set[Key]) -> Any:
    """Replace futures in ``obj`` (and lists, tuples, dicts inside it) by TaskRefs.

    Dependency keys are added to ``deps``. Containers without futures are
    returned as they are, uncopied.
    """
    typ = type(obj)
    if typ in _PLAIN:
        return obj
    if isinstance(obj, future_type):
        deps.add(obj.key)
        return TaskRef(obj.key)
    if typ is tuple or typ is list:
        if all(type(item) in _PLAIN for item in obj):  # a map's usual arguments
            return obj
        packed = [pack_futures(item, future_type, deps) for item in obj]
        if all(a is b for a, b in zip(packed, obj, strict=True)):
            return obj
        return packed if type(obj) is list else tuple(packed)
    if type(obj) is dict:
        packed_dict = {k: pack_futures(v, future_type, deps) for k, v in obj.items()}
        if all(packed_dict[k] is v for k, v in obj.items()):
            return obj
        return packed_dict
    return obj
