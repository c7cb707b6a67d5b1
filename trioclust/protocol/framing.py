"""Sans-IO framing: how a message's frames are laid out on a byte stream.

Wire format of one message, all integers little-endian unsigned 64-bit::

    N | len(frame 0) | ... | len(frame N-1) | frame 0 | ... | frame N-1

:func:`frame_prefix` builds the part before the frames. :class:`FrameReader`
is the decoder: feed it whatever bytes arrive, ask it for complete messages.
It does no I/O, so it is tested with plain asserts and shared by every
transport.

The reader trusts nothing it has not checked: the frame count, each frame's
length and the message total are compared with their limits *before*
anything is allocated for them, so a peer declaring a petabyte frame costs a
few bytes of parsing and a :class:`~trioclust.errors.ProtocolError`.
Large frames are copied once into a buffer of their declared size as bytes
arrive, never re-concatenated, so reading a message is linear in its size;
that buffer is a ``bytearray``, or from 1 MiB a ``memoryview`` of a private
anonymous memory map on huge pages, reused once nothing refers to it any more
(see ``_BufferCache``), which costs no zero-filling pass and, reused, no page
faults either.
"""

from __future__ import annotations

import mmap
import struct
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from trioclust import config
from trioclust.errors import ProtocolError
from trioclust.protocol.serialize import Frame

__all__ = ["FrameReader", "frame_prefix", "frames_nbytes"]

_U64 = struct.Struct("<Q")
# Frames at least this large that have not fully arrived get a buffer of their
# own, filled in place; smaller ones accumulate in the shared read buffer.
_LARGE_FRAME_BYTES = 64 * 1024
# Upper bound on how much the reader asks a transport for at once: big enough
# that large frames take few reads, small enough that a socket read does not
# allocate a huge temporary buffer.
_MAX_READ_BYTES = 4 * 2**20
_MIN_READ_BYTES = 64 * 1024
# Frames at least this large get a private anonymous memory map rather than a
# bytearray, from a process-wide cache (_BufferCache). bytearray(n) first
# writes n zeros itself, faulting in every 4 KiB page: for a 200 MB frame that
# cost more than reading the socket (~200 ms of ~330 ms here). A fresh map is
# advised to use transparent huge pages, so the kernel faults it in 2 MiB at a
# time as recv_into fills it (~45 ms); a reused one costs no faults at all.
_MAPPED_FRAME_BYTES = 2**20
_MAP_ROUNDING = 2 * 2**20
_MAP_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)
# Whether "nothing else refers to this map" can be read off its reference count.
_CAN_REUSE = sys.implementation.name == "cpython" and hasattr(sys, "getrefcount")


def _new_map(size: int) -> mmap.mmap:
    mapped = mmap.mmap(-1, size, flags=_MAP_FLAGS)
    if _MADV_HUGEPAGE is not None:
        try:
            mapped.madvise(_MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages: 4 KiB pages then
            pass
    return mapped


class _BufferCache:
    """Large receive buffers, handed out again once nothing refers to them.

    A frame handed out is a ``memoryview`` of one of these maps; the value
    decoded from it (a NumPy array unpickled from the frame, say) keeps that
    view, and so the map, alive. A map whose only reference is the cache's
    own is free: its next user overwrites it whole. The cache holds at most
    ``comm.receive-buffer-cache`` bytes; beyond that, free maps are dropped
    (the oldest first) or a frame gets a map of its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps: list[mmap.mmap] = []

    def _free_maps(self) -> list[int]:
        """Indexes of the maps nothing outside the cache refers to."""
        free = []
        maps = self._maps
        for i in range(len(maps)):
            mapped = maps[i]
            # references: the list, ``mapped``, and getrefcount's argument
            if sys.getrefcount(mapped) <= 3:
                free.append(i)
            del mapped
        return free

    def take(self, length: int) -> memoryview:
        """A writable view of ``length`` bytes (contents undefined)."""
        limit = config.get_int("comm.receive-buffer-cache") if _CAN_REUSE else 0
        if limit <= 0:
            self.clear()
            return memoryview(_new_map(length))
        with self._lock:
            maps = self._maps
            free = self._free_maps()
            for i in free:
                if length <= len(maps[i]) <= 2 * length:
                    return memoryview(maps[i])[:length]
            size = -(-length // _MAP_ROUNDING) * _MAP_ROUNDING
            held = sum(len(m) for m in maps)
            dropped = set()
            for i in free:  # make room: drop free maps, oldest first
                if held + size <= limit:
                    break
                dropped.add(i)
                held -= len(maps[i])
            if dropped:
                self._maps = maps = [m for j, m in enumerate(maps) if j not in dropped]
            if held + size > limit:
                return memoryview(_new_map(length))
            fresh = _new_map(size)
            maps.append(fresh)
            return memoryview(fresh)[:length]

    def clear(self) -> None:
        """Forget every map (maps still in use live on with their users)."""
        with self._lock:
            self._maps.clear()


_buffers = _BufferCache()


def _frame_buffer(length: int) -> bytearray | memoryview:
    """A writable buffer of ``length`` bytes for a large frame."""
    if length < _MAPPED_FRAME_BYTES or not _MAP_FLAGS:
        return bytearray(length)
    return _buffers.take(length)


def frames_nbytes(frames: Sequence[Frame]) -> list[int]:
    """The length in bytes of each frame (``memoryview.nbytes``, not ``len``)."""
    return [f.nbytes if type(f) is memoryview else len(f) for f in frames]


def frame_prefix(frames: Sequence[Frame]) -> bytes:
    """The bytes that go before ``frames`` on the wire: count, then lengths."""
    n = len(frames)
    return struct.pack(f"<{n + 1}Q", n, *frames_nbytes(frames))


class FrameReader:
    """Incremental decoder of framed messages, with limits checked up front.

    Use it as: ``reader.feed(data)`` for each chunk received, then
    ``reader.next_message()`` until it returns ``None``.

    Args:
        max_frames: most frames one message may declare
            (default ``comm.max-frames``).
        max_frame_bytes: largest frame accepted (default ``comm.max-frame-bytes``).
        max_message_bytes: largest total of a message's frames
            (default ``comm.max-message-bytes``).
    """

    __slots__ = (
        "_buf",
        "_error",
        "_filled",
        "_frames",
        "_large",
        "_lengths",
        "limits_key",
        "max_frame_bytes",
        "max_frames",
        "max_message_bytes",
    )

    def __init__(
        self,
        *,
        max_frames: int | None = None,
        max_frame_bytes: int | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.max_frames = config.get_int("comm.max-frames") if max_frames is None else max_frames
        self.max_frame_bytes = (
            config.get_int("comm.max-frame-bytes") if max_frame_bytes is None else max_frame_bytes
        )
        self.max_message_bytes = (
            config.get_int("comm.max-message-bytes")
            if max_message_bytes is None
            else max_message_bytes
        )
        #: the config key an error names instead of the usual ones while the
        #: limits are lowered (before the handshake), else ""
        self.limits_key = ""
        self._buf = bytearray()
        self._lengths: list[int] | None = None  # of the message being read
        self._frames: list[Frame] = []  # its frames read so far
        self._large: bytearray | memoryview | None = None  # a large frame being filled
        self._filled = 0
        self._error: ProtocolError | None = None

    @property
    def in_message(self) -> bool:
        """Whether part of a message has been received but not all of it."""
        return bool(self._buf) or self._lengths is not None

    @property
    def read_size(self) -> int:
        """A good ``max_bytes`` for the next transport read."""
        if self._large is not None and self._lengths is not None:
            wanted = self._lengths[len(self._frames)] - self._filled
            return max(_MIN_READ_BYTES, min(wanted, _MAX_READ_BYTES))
        return _MIN_READ_BYTES

    def large_target(self) -> memoryview | None:
        """Where the rest of the large frame being read goes, or None.

        A transport that can read into a buffer fills this view directly and
        then calls :meth:`advance`: the frame is then copied once, by the
        kernel. None when no large frame is waiting for bytes (use
        :meth:`feed` then).
        """
        large = self._large
        if large is None or self._error is not None:
            return None
        assert self._lengths is not None
        end = self._lengths[len(self._frames)]
        if self._filled >= end:
            return None
        return memoryview(large)[self._filled : end]

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` written into the view :meth:`large_target` returned."""
        self._filled += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer.

        Raises:
            ProtocolError: the reader already failed; it stays failed.
        """
        if self._error is not None:
            raise self._error
        large = self._large
        if large is None:
            self._buf += data
            return
        assert self._lengths is not None
        need = self._lengths[len(self._frames)] - self._filled
        if len(data) <= need:
            large[self._filled : self._filled + len(data)] = data
            self._filled += len(data)
        else:
            with memoryview(data) as view:
                large[self._filled : self._filled + need] = view[:need]
                self._buf += view[need:]
            self._filled += need

    def next_message(self) -> list[Frame] | None:
        """The next complete message's frames, or ``None`` until more bytes arrive.

        Raises:
            ProtocolError: the bytes break the framing or a limit; the reader
                is unusable afterwards (the stream cannot be resynchronised).
        """
        if self._error is not None:
            raise self._error
        if self._lengths is None and not self._read_lengths():
            return None
        lengths = self._lengths
        assert lengths is not None
        frames = self._frames
        buf = self._buf
        while len(frames) < len(lengths):
            length = lengths[len(frames)]
            large = self._large
            if large is not None:
                if self._filled < length:
                    return None
                frames.append(large)
                self._large = None
            elif len(buf) >= length:
                frames.append(bytes(buf[:length]))
                del buf[:length]  # cheap: bytearray drops a prefix in O(1)
            elif length >= _LARGE_FRAME_BYTES:
                large = self._large = _frame_buffer(length)
                self._filled = len(buf)
                large[: len(buf)] = buf
                buf.clear()
                return None
            else:
                return None
        self._lengths = None
        self._frames = []
        return frames

    def _fail(self, message: str) -> NoReturn:
        self._error = ProtocolError(message)
        self._buf = bytearray()
        raise self._error

    def _read_lengths(self) -> bool:
        buf = self._buf
        if len(buf) < 8:
            return False
        (n,) = _U64.unpack_from(buf)
        if n == 0:
            self._fail("message declares 0 frames; every message has a header frame")
        if n > self.max_frames:
            self._fail(
                f"message declares {n} frames, over the limit of {self.max_frames} "
                f"({self.limits_key or 'comm.max-frames'})"
            )
        prefix = 8 * (n + 1)
        if len(buf) < prefix:
            return False
        lengths = list(struct.unpack_from(f"<{n}Q", buf, 8))
        largest = max(lengths)
        if largest > self.max_frame_bytes:
            self._fail(
                f"frame declares {largest} bytes, over the limit of {self.max_frame_bytes} "
                f"({self.limits_key or 'comm.max-frame-bytes'})"
            )
        total = sum(lengths)
        if total > self.max_message_bytes:
            self._fail(
                f"message declares {total} bytes in total, over the limit of "
                f"{self.max_message_bytes} ({self.limits_key or 'comm.max-message-bytes'})"
            )
        del buf[:prefix]
        self._lengths = lengths
        return True
