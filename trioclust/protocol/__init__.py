"""trioclust's wire protocol: serialization, message encoding, framing.

Imports only the standard library, msgpack and cloudpickle: no event loop,
no I/O. Everything here is plain functions and sans-IO objects.
"""

from __future__ import annotations

from trioclust.errors import ProtocolError
from trioclust.protocol.codec import dumps, loads
from trioclust.protocol.framing import FrameReader, frame_prefix, frames_nbytes
from trioclust.protocol.serialize import Frame, Serialized, deserialize, serialize
from trioclust.protocol.task_spec import TaskRef, collect_refs, substitute

#: Version of the wire protocol; peers with different versions refuse each other.
PROTOCOL_VERSION = 2

__all__ = [
    "PROTOCOL_VERSION",
    "Frame",
    "FrameReader",
    "ProtocolError",
    "Serialized",
    "TaskRef",
    "collect_refs",
    "deserialize",
    "dumps",
    "frame_prefix",
    "frames_nbytes",
    "loads",
    "serialize",
    "substitute",
]
