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
few bytes of parsing and a :class:`~trioclust.protocol.errors.ProtocolError`.
Large frames are copied once into a buffer of their declared size as bytes
arrive, never re-concatenated, so reading a message is linear in its size.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NoReturn

from trioclust import config
from trioclust.protocol.errors import ProtocolError
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
        self._buf = bytearray()
        self._lengths: list[int] | None = None  # of the message being read
        self._frames: list[Frame] = []  # its frames read so far
        self._large: bytearray | None = None  # a large frame being filled
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
                large = self._large = bytearray(length)
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
                f"(comm.max-frames)"
            )
        prefix = 8 * (n + 1)
        if len(buf) < prefix:
            return False
        lengths = list(struct.unpack_from(f"<{n}Q", buf, 8))
        largest = max(lengths)
        if largest > self.max_frame_bytes:
            self._fail(
                f"frame declares {largest} bytes, over the limit of {self.max_frame_bytes} "
                f"(comm.max-frame-bytes)"
            )
        total = sum(lengths)
        if total > self.max_message_bytes:
            self._fail(
                f"message declares {total} bytes in total, over the limit of "
                f"{self.max_message_bytes} (comm.max-message-bytes)"
            )
        del buf[:prefix]
        self._lengths = lengths
        return True
