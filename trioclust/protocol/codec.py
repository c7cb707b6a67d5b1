"""Messages to frames and back: a msgpack header plus out-of-band frames.

Theory of operation
-------------------
:func:`dumps` turns a message (usually a dict, or a list of dicts) into a list
of frames. Frame 0 is a msgpack header (``use_bin_type=True``). Everything
msgpack encodes natively stays in the header, except:

* a :class:`~trioclust.protocol.serialize.Serialized` becomes an ExtType
  (code ``1``, payload ``<first frame index, frame count>``) and its frames are
  appended after the header, uncopied; the same object met again in the same
  message refers to the same frames, and decodes to one shared object (a
  ``map``'s function pickle travels, and is held by the scheduler, once);
* except a small one: a one-frame pickle of at most ``INLINE_MAX`` bytes
  travels inside the header (code ``3``, payload the pickle), and the same
  object met again refers back to it (code ``4``, payload ``<n>``: the n-th
  inline pickle of this header). Most task arguments and results are a few
  dozen bytes: as frames of their own they cost more in framing (a length,
  a slice, a Python step per frame on both sides) than the bytes themselves;
* ``bytes``, ``bytearray`` and ``memoryview`` values of at least the
  out-of-band threshold (``comm.out-of-band-threshold``) become an ExtType
  (code ``2``, payload ``<frame index>``) and travel as their own frame, uncopied;
* a tuple becomes an ExtType (code ``5``, payload its items packed as a
  msgpack array, tuples inside it again as code ``5``) and comes back a
  tuple, so task keys such as ``("x", 0, 1)`` keep their type, dict keys
  included. Subclasses of the msgpack types travel as their base type (a
  namedtuple as a tuple, an ``IntEnum`` as an ``int``);
* sets and frozensets are sent as lists;
* any other object msgpack cannot encode is pickled with
  :func:`~trioclust.protocol.serialize.serialize` and sent like a ``Serialized``.

:func:`loads` reverses this, except that pickled values come back as
``Serialized`` objects and are never unpickled here: unpickling runs code, so
only the layer that owns a value decides to do it. Other lossy round trips,
subclasses of ``tuple``/``dict``/``list``/``str``/``int``/``float``/``bytes``
come back as the base type, out-of-band bytes come back as whatever buffer
object the frame is (``bytes``, ``bytearray`` or ``memoryview``). Dict keys
must be ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``, or tuples
of these.

Both directions are hot paths (every scheduler message crosses them), so the
common case is one C-level pack or unpack call. The Python walk that moves
large buffers out of band runs only for a header of at least the threshold
that holds the marker of a bin that long (see ``_may_hold_bin``), and copies a
container only when something in it must be replaced.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from trioclust import config
from trioclust.errors import ProtocolError
from trioclust.protocol.serialize import Frame, Serialized, serialize

__all__ = ["dumps", "loads"]

_EXT_SERIALIZED = 1
_EXT_BUFFER = 2
_EXT_INLINE = 3
_EXT_INLINE_REF = 4
_EXT_TUPLE = 5
_SERIALIZED_REF = struct.Struct("<II")
_BUFFER_REF = struct.Struct("<I")
_INLINE_REF = struct.Struct("<I")
#: A one-frame pickle of up to this many bytes travels inside the header.
INLINE_MAX = 1024

_BUFFER_TYPES = frozenset({bytes, bytearray, memoryview})
# types the out-of-band walk must look inside or at
_WALKED = frozenset({dict, list, tuple, bytes, bytearray, memoryview})
_KEY_TYPES = frozenset({str, int, float, bool, bytes, type(None)})
# subclasses msgpack packs as their base type (strict_types sends them to default)
_BASES = (str, int, float, bytes, bytearray, dict, list)

_unpackb = msgpack.unpackb
_ExtType = msgpack.ExtType
_new_tuple = tuple.__new__


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(code, data)`` without its argument checks (a Python
    ``__new__``, on the hot path): our codes and bytes are valid by construction."""
    return _new_tuple(_ExtType, (code, data))  # type: ignore[no-any-return]


def _buffer_frame(buf: memoryview) -> Frame:
    """A flat byte view of ``buf``; copies only when it is not contiguous."""
    if buf.ndim == 1 and buf.format == "B":
        return buf
    if buf.c_contiguous:
        return buf.cast("B")
    return buf.tobytes(order="A")


def _extract(obj: Any, frames: list[Frame], threshold: int) -> Any:
    """Replace large buffers inside ``obj`` by frame references, copy-on-write."""
    typ = type(obj)
    if typ is dict:
        replaced: dict[Any, Any] | None = None
        for key, value in obj.items():
            if type(key) is not str and type(key) not in _KEY_TYPES and not _is_tuple_key(key):
                raise TypeError(
                    f"message dict keys must be str, int, float, bool, None, bytes or "
                    f"tuples of these, not {type(key).__name__} ({key!r})"
                )
            if type(value) in _WALKED:
                new = _extract(value, frames, threshold)
                if new is not value:
                    if replaced is None:
                        replaced = dict(obj)
                    replaced[key] = new
        return obj if replaced is None else replaced
    if typ is list or typ is tuple:
        items: list[Any] | None = None
        for i, value in enumerate(obj):
            if type(value) in _WALKED:
                new = _extract(value, frames, threshold)
                if new is not value:
                    if items is None:
                        items = list(obj)
                    items[i] = new
        if items is None:
            return obj
        return items if typ is list else tuple(items)
    if typ is memoryview:
        if obj.nbytes < threshold:
            return obj
        frames.append(_buffer_frame(obj))
        return _ext(_EXT_BUFFER, _BUFFER_REF.pack(len(frames) - 1))
    if typ in _BUFFER_TYPES and len(obj) >= threshold:
        frames.append(obj)
        return _ext(_EXT_BUFFER, _BUFFER_REF.pack(len(frames) - 1))
    return obj


def _is_tuple_key(key: Any) -> bool:
    return type(key) is tuple and all(
        type(k) in _KEY_TYPES or _is_tuple_key(k) for k in key
    )


def _may_hold_bin(header: bytes, threshold: int) -> bool:
    """Whether a packed header may hold a bin (bytes-like) of ``threshold``
    bytes or more.

    False is certain: such a bin starts with the byte 0xc5 and a 2-byte length,
    or 0xc6 and a 4-byte length (big-endian), its bytes follow inside the
    header, and every such byte is looked at. True may be a byte inside other
    data; the caller then walks the message, as it would without this test.
    A few ``bytes.find`` calls instead of a Python walk over every message of
    a large batch.
    """
    if threshold < 256:
        return True  # a bin8 (0xc4, up to 255 bytes) could be large enough
    end = len(header)
    for marker, size in ((b"\xc5", 2), (b"\xc6", 4)):
        i = header.find(marker)
        while 0 <= i <= end - 1 - size:
            length = int.from_bytes(header[i + 1 : i + 1 + size], "big")
            # a real one is long enough, and its bytes follow within the header
            if threshold <= length <= end - (i + 1 + size):
                return True
            i = header.find(marker, i + 1)
    return False


class _Encoder(threading.local):
    """One reusable msgpack ``Packer`` per thread (cheaper than ``packb``)."""

    def __init__(self) -> None:
        self.frames: list[Frame] | None = None  # of the dumps() call in progress
        self.memo: dict[int, tuple[Any, Serialized]] = {}
        # Serialized objects already placed in this header: the same object
        # again (one function's pickle in 10,000 run_specs) refers to the same
        # frames rather than adding them once more
        self.placed: dict[int, Any] = {}
        self.ninlined = 0  # Serialized objects placed in this header inline
        # strict_types: tuples (and subclasses of the msgpack types) reach
        # default, which sends tuples as tuples (code 5)
        self.packer = msgpack.Packer(use_bin_type=True, default=self.default, strict_types=True)

    def forget_placed(self) -> None:
        """Start a header afresh: no Serialized placed in it yet."""
        self.placed.clear()
        self.ninlined = 0

    def default(self, obj: Any) -> Any:
        frames = self.frames
        assert frames is not None
        if type(obj) is not Serialized:
            if isinstance(obj, tuple):
                # packed by a packer of its own: this one is mid-message
                items = msgpack.packb(
                    list(obj), use_bin_type=True, default=self.default, strict_types=True
                )
                return _ext(_EXT_TUPLE, items)
            if isinstance(obj, _BASES) and type(obj) not in _BASES:
                for base in _BASES:
                    if isinstance(obj, base):
                        convert: Any = base
                        return convert(obj)
            if isinstance(obj, set | frozenset):
                return list(obj)
            if not isinstance(obj, Serialized):
                # pickle each object once, even when the header is packed twice
                seen = self.memo.get(id(obj))
                if seen is None:
                    seen = self.memo[id(obj)] = (obj, serialize(obj))
                obj = seen[1]
        ext = self.placed.get(id(obj))
        if ext is None:
            obj_frames = obj.frames
            if len(obj_frames) == 1 and len(obj_frames[0]) <= INLINE_MAX:
                # small: in the header itself; met again, a reference to its
                # place among this header's inline pickles (placed holds that
                # number until then: most are met once)
                self.placed[id(obj)] = self.ninlined
                self.ninlined += 1
                return _ext(_EXT_INLINE, bytes(obj_frames[0]))
            start = len(frames)
            frames.extend(obj_frames)
            ext = self.placed[id(obj)] = _ext(
                _EXT_SERIALIZED, _SERIALIZED_REF.pack(start, len(obj_frames))
            )
        elif type(ext) is int:
            ext = self.placed[id(obj)] = _ext(_EXT_INLINE_REF, _INLINE_REF.pack(ext))
        return ext


_encoder = _Encoder()


def dumps(msg: Any, *, oob_threshold: int | None = None) -> list[Frame]:
    """Encode a message as frames: a msgpack header, then out-of-band frames.

    Args:
        msg: the message; msgpack-native values, ``Serialized`` objects,
            buffers, and anything picklable (which is pickled).
        oob_threshold: buffers of at least this many bytes travel as their own
            frame; defaults to ``comm.out-of-band-threshold``. Hot callers
            (a :class:`~trioclust.comm.Comm`) pass it, because reading the
            config costs more than encoding a small message.

    Returns:
        The frames; out-of-band frames are the caller's objects, not copies.

    Raises:
        TypeError: a dict key is not a msgpack scalar (checked only for
            messages whose header would reach ``oob_threshold`` bytes; smaller
            ones with such keys are refused by the receiver).
        pickle.PicklingError: an object is neither msgpack-encodable nor picklable.
    """
    if oob_threshold is None:
        oob_threshold = config.get_int("comm.out-of-band-threshold")
    enc = _encoder
    if enc.frames is not None:  # re-entered from a __reduce__: use a fresh encoder
        enc = _Encoder()
    frames: list[Frame] = [b""]
    enc.frames = frames
    try:
        header = enc.packer.pack(msg)
        # A header smaller than the threshold cannot hold a buffer that should
        # have gone out of band, nor can one without the marker of such a
        # long msgpack bin: most messages are packed once, unwalked.
        if (
            len(header) >= oob_threshold
            and type(msg) in _WALKED
            and _may_hold_bin(header, oob_threshold)
        ):
            buffers: list[Frame] = [b""]
            body = _extract(msg, buffers, oob_threshold)
            if body is not msg:
                frames[1:] = buffers[1:]
                enc.forget_placed()
                header = enc.packer.pack(body)
    finally:
        enc.frames = None
        if enc.memo:
            enc.memo.clear()
        if enc.placed:
            enc.forget_placed()
    frames[0] = header
    return frames


def _make_ext_hook(frames: Sequence[Frame], used: list[int]) -> Callable[[int, bytes], Any]:
    nframes = len(frames)
    # one object per distinct reference: a pickle referred to many times
    # (a function in many run_specs) is decoded, and then held, once
    decoded: dict[bytes, Serialized] = {}
    inlined: list[Serialized] = []

    def ext_hook(code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE:
            items = _unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False, use_list=True)
            if type(items) is not list:
                raise ProtocolError("message header holds a malformed tuple")
            return tuple(items)
        if code == _EXT_INLINE:
            small = Serialized([data])
            inlined.append(small)
            return small
        if code == _EXT_INLINE_REF and len(data) == _INLINE_REF.size:
            (index,) = _INLINE_REF.unpack(data)
            if index < len(inlined):
                return inlined[index]
            raise ProtocolError(
                f"message header refers to inline value {index}, but holds {len(inlined)} before it"
            )
        if code == _EXT_BUFFER and len(data) == _BUFFER_REF.size:
            (index,) = _BUFFER_REF.unpack(data)
            if 1 <= index < nframes:
                used[0] += 1
                return frames[index]
            raise ProtocolError(
                f"message header references frame {index}, but the message has {nframes} frames"
            )
        if code == _EXT_SERIALIZED and len(data) == _SERIALIZED_REF.size:
            seen = decoded.get(data)
            if seen is not None:
                return seen
            start, count = _SERIALIZED_REF.unpack(data)
            if start >= 1 and count >= 1 and start + count <= nframes:
                used[0] += count
                seen = decoded[data] = Serialized(list(frames[start : start + count]))
                return seen
            raise ProtocolError(
                f"message header references frames {start}..{start + count - 1}, "
                f"but the message has {nframes} frames"
            )
        raise ProtocolError(f"message header holds an unknown extension (type {code})")

    return ext_hook


def loads(frames: Sequence[Frame]) -> Any:
    """Decode frames made by :func:`dumps`; pickled values stay ``Serialized``.

    Args:
        frames: the frames of one message, header first.

    Returns:
        The message. Out-of-band buffers come back as the frame objects
        themselves.

    Raises:
        ProtocolError: the header is not msgpack, is truncated or has trailing
            bytes, or its frame references do not match the frames given.
    """
    nframes = len(frames)
    if nframes == 0:
        raise ProtocolError("empty message: no header frame")
    used = [0]
    hook = _make_ext_hook(frames, used)
    try:
        msg = _unpackb(frames[0], ext_hook=hook, raw=False, strict_map_key=False, use_list=True)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises many types for garbage
        reason = str(exc) or type(exc).__name__
        raise ProtocolError(f"malformed message header: {reason}") from exc
    if used[0] != nframes - 1:
        raise ProtocolError(
            f"message carries {nframes - 1} out-of-band frames, but its header references {used[0]}"
        )
    return msg
