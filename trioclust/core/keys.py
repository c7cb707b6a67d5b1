"""Task keys: what they may be, and how they read in logs and on the dashboard.

A key is a ``str``, an ``int``, a ``float``, or a tuple of keys, as in dask
(``"inc-3f2a..."``, ``("x", 0, 1)``). Keys are compared and hashed as they
are; only their display turns them into text.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["Key", "key_str"]

#: A task's key: ``str``, ``int``, ``float`` or a tuple of keys.
Key: TypeAlias = "str | int | float | tuple[Key, ...]"


def key_str(key: Key) -> str:
    """``key`` as text: a string as it is, anything else as its ``repr``."""
    return key if isinstance(key, str) else repr(key)
