"""Pickle protocol 5 with out-of-band buffers, wrapped in an opaque :class:`Serialized`.

:func:`serialize` cloudpickles an object with ``protocol=5`` and a
``buffer_callback``, so large contiguous buffers (numpy arrays, ``PickleBuffer``
exporters) are *not* copied into the pickle: they stay as memoryviews of the
original memory and travel as their own frames on the wire.

A :class:`Serialized` is opaque on purpose. The scheduler relays functions,
arguments and results between clients and workers without unpickling them,
because unpickling runs arbitrary code; only the process that needs the value
calls :meth:`Serialized.deserialize`.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

__all__ = ["Frame", "Serialized", "deserialize", "serialize"]

#: A frame of a message: any bytes-like object that exports a contiguous buffer.
Frame = bytes | bytearray | memoryview


def _frame_nbytes(frame: Frame) -> int:
    return frame.nbytes if type(frame) is memoryview else len(frame)


class Serialized:
    """A pickled value, kept opaque until someone calls :meth:`deserialize`.

    Attributes:
        frames: frame 0 is the pickle stream; the rest are its pickle-5
            out-of-band buffers, in the order the pickle refers to them.
    """

    __slots__ = ("frames",)

    def __init__(self, frames: list[Frame]) -> None:
        if not frames:
            raise ValueError("a Serialized value needs at least the pickle frame")
        self.frames = frames

    @property
    def nbytes(self) -> int:
        """Total size of all frames, in bytes."""
        return sum(_frame_nbytes(f) for f in self.frames)

    def deserialize(self) -> Any:
        """Unpickle the value. This runs code chosen by whoever pickled it."""
        return pickle.loads(self.frames[0], buffers=self.frames[1:])

    def __repr__(self) -> str:
        return f"<Serialized: {len(self.frames)} frame(s), {self.nbytes} bytes>"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # Nested inside another pickle, keep the frames out of band again
        # (protocol 5) instead of failing on memoryviews, which cannot pickle.
        if isinstance(protocol, int) and protocol >= 5:
            return (Serialized, ([pickle.PickleBuffer(f) for f in self.frames],))
        return (Serialized, ([bytes(f) for f in self.frames],))


def _names_by_value_module(header: bytes) -> bool:
    """Whether the pickle refers to a module registered with cloudpickle to
    travel by value (``cloudpickle.register_pickle_by_value``)."""
    registered = cloudpickle.list_registry_pickle_by_value()
    return bool(registered) and any(name.encode() in header for name in registered)


def serialize(obj: Any) -> Serialized:
    """Pickle ``obj`` with protocol 5, keeping large buffers out of band.

    The standard pickler is tried first; objects it cannot pickle, or pickles
    by reference to ``__main__``, are cloudpickled (by value).

    Contiguous buffers (numpy arrays and other ``PickleBuffer`` exporters) are
    not copied: their frames are memoryviews of the original memory, so the
    object must not be mutated until the frames have been sent.

    Args:
        obj: any picklable object, including lambdas and local functions.

    Returns:
        The pickle stream and its out-of-band buffers.
    """
    buffers: list[pickle.PickleBuffer] = []
    # The standard pickler first, as dask does: it is several times faster
    # than cloudpickle's, and gives the same bytes for anything importable.
    # What it cannot do by reference (lambdas, local or dynamic classes and
    # functions), or does only by a reference to __main__ (which the worker
    # does not share) or to a module registered to travel by value, goes to
    # cloudpickle, which pickles it by value.
    try:
        header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except Exception:
        header = b""
    if not header or b"__main__" in header or _names_by_value_module(header):
        buffers.clear()
        header = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    frames: list[Frame] = [header]
    for buffer in buffers:
        try:
            frames.append(buffer.raw())
        except BufferError:  # not contiguous: the one case that must copy
            frames.append(memoryview(buffer).tobytes(order="A"))
    return Serialized(frames)


def deserialize(s: Serialized) -> Any:
    """Unpickle a :class:`Serialized`; the same as ``s.deserialize()``."""
    return s.deserialize()
