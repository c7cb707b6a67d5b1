"""The wire protocol: serialization, message encoding, framing, task placeholders.

All synchronous: the protocol is sans-IO.
"""

from __future__ import annotations

import pickle
import struct
import sys
import threading
from typing import Any

import cloudpickle
import msgpack
import numpy as np
import pytest

from trioclust import config
from trioclust.errors import ProtocolError
from trioclust.protocol import (
    PROTOCOL_VERSION,
    FrameReader,
    Serialized,
    TaskRef,
    collect_refs,
    deserialize,
    dumps,
    frame_prefix,
    loads,
    serialize,
    substitute,
)
from trioclust.protocol.codec import INLINE_MAX


def _explode() -> None:
    raise RuntimeError("unpickling this runs code")


class Booby:
    """Pickles fine; unpickling it raises (stands for code a peer would run)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


def wire(frames: list[Any]) -> bytes:
    return frame_prefix(frames) + b"".join(bytes(f) for f in frames)


def roundtrip(msg: Any) -> Any:
    """Through the codec *and* the framing, fed one byte at a time."""
    reader = FrameReader()
    for byte in wire(dumps(msg)):
        assert reader.next_message() is None
        reader.feed(bytes([byte]))
    frames = reader.next_message()
    assert frames is not None
    assert not reader.in_message
    return loads(frames)


# ------------------------------------------------------------------ codec


def test_protocol_version() -> None:
    assert PROTOCOL_VERSION == 2


@pytest.mark.parametrize(
    "msg",
    [
        {"op": "ping"},
        [{"op": "a", "x": 1}, {"op": "b", "y": [1, 2, {"z": None}]}],
        {"nested": {"deep": {"deeper": [1.5, -3, True, False, None, "ü", b"raw"]}}},
        {1: "int key", "": "empty key", "big": 2**63 - 1, "neg": -(2**63)},
        [],
        "just a string",
    ],
)
def test_roundtrip_msgpack_values(msg: Any) -> None:
    assert roundtrip(msg) == msg
    assert len(dumps(msg)) == 1, "small msgpack-native values stay in the header"


def test_tuples_stay_tuples_and_sets_come_back_as_lists() -> None:
    got = roundtrip({"t": (1, (2, 3)), "l": [(4,)], "s": {4}, "f": frozenset({5})})
    assert got == {"t": (1, (2, 3)), "l": [(4,)], "s": [4], "f": [5]}
    assert type(got["t"]) is tuple
    assert type(got["t"][1]) is tuple
    assert type(got["l"]) is list


def test_serialized_passes_through_without_unpickling() -> None:
    s = serialize(Booby())
    got = roundtrip({"op": "compute", "run_spec": s})
    assert isinstance(got["run_spec"], Serialized)
    assert [bytes(f) for f in got["run_spec"].frames] == [bytes(f) for f in s.frames]
    with pytest.raises(RuntimeError, match="unpickling this runs code"):
        got["run_spec"].deserialize()


@pytest.mark.parametrize("shared", [len, b"f" * (INLINE_MAX + 1)], ids=["small", "large"])
def test_a_serialized_object_met_twice_travels_once(shared: object) -> None:
    fn = serialize(shared)
    msg = {"tasks": [["a", [fn, serialize(1)]], ["b", [fn, serialize(2)]]]}
    frames = dumps(msg)
    # small pickles ride in the header; a large one is its own frame, once
    assert len(frames) == (1 if shared is len else 2)
    assert len(frames[0]) < 2 * INLINE_MAX
    got = loads(frames)
    first, second = got["tasks"][0][1][0], got["tasks"][1][1][0]
    assert first is second
    assert deserialize(first) == shared
    assert [deserialize(t[1][1]) for t in got["tasks"]] == [1, 2]


def test_small_pickles_travel_in_the_header() -> None:
    small, large = serialize(b"s" * (INLINE_MAX - 50)), serialize(b"l" * (INLINE_MAX + 100))
    frames = dumps({"small": small, "large": large})
    assert len(frames) == 2
    assert bytes(frames[1]) == bytes(large.frames[0])
    got = loads(frames)
    assert deserialize(got["small"]) == b"s" * (INLINE_MAX - 50)
    assert deserialize(got["large"]) == b"l" * (INLINE_MAX + 100)


def test_unencodable_objects_are_pickled_and_never_unpickled_by_loads() -> None:
    got = roundtrip({"booby": Booby(), "huge": 2**100, "fn": _explode})
    assert all(isinstance(v, Serialized) for v in got.values())
    assert got["huge"].deserialize() == 2**100
    assert deserialize(got["fn"]) is _explode
    with pytest.raises(RuntimeError, match="runs code"):
        got["booby"].deserialize()


def test_numpy_array_is_not_copied() -> None:
    a = np.arange(100_000, dtype="float64")
    s = serialize(a)
    assert isinstance(s.frames[1], memoryview)
    assert np.shares_memory(np.frombuffer(s.frames[1], dtype=a.dtype), a)
    frames = dumps({"data": s})
    assert any(f is s.frames[1] for f in frames), "dumps copied the buffer"
    assert s.nbytes >= a.nbytes
    got = loads(frames)["data"].deserialize()
    np.testing.assert_array_equal(got, a)
    assert np.shares_memory(got, a), "loads/deserialize copied the buffer"


def test_large_buffers_go_out_of_band_uncopied() -> None:
    big = b"b" * 10_000
    arr = np.ones(1000)
    view = memoryview(arr)  # format "d": must travel as bytes, length in bytes
    frames = dumps({"bytes": big, "ba": bytearray(5000), "mv": view, "small": b"s" * 10})
    assert len(frames) == 4
    assert any(f is big for f in frames)
    got = roundtrip({"bytes": big, "mv": view, "small": b"s" * 10})
    assert bytes(got["bytes"]) == big
    assert bytes(got["mv"]) == arr.tobytes()
    assert got["small"] == b"s" * 10


def test_a_large_header_is_walked_for_buffers_only_when_it_may_hold_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trioclust.protocol import codec

    # marker bytes inside data, followed by lengths under the threshold
    data = b"\xc5\x0f\xff" * 20 + b"\xc6\x00\x00\x0f\xff" * 20
    small_many = [{"op": "x", "key": f"k-{i}", "n": i % 100, "b": data} for i in range(200)]
    walks: list[object] = []
    real = codec._extract

    def counting(obj: Any, frames: list[Any], threshold: int) -> Any:
        walks.append(obj)
        return real(obj, frames, threshold)

    monkeypatch.setattr(codec, "_extract", counting)
    frames = dumps(small_many)  # ~30 KB of header, no bin of 4 KiB or more
    assert len(frames) == 1
    assert len(frames[0]) > 4096
    assert walks == []
    assert loads(frames) == small_many
    for size in (4096, 70_000):  # a bin16 and a bin32 at the threshold or above
        msg = [*small_many, {"blob": b"z" * size}]
        frames = dumps(msg)
        assert walks[0] is msg
        walks.clear()
        assert len(frames) == 2
        assert bytes(frames[1]) == b"z" * size
        assert bytes(loads(frames)[-1]["blob"]) == b"z" * size


def test_out_of_band_threshold_is_configurable() -> None:
    assert len(dumps({"b": b"x" * 100}, oob_threshold=50)) == 2
    assert len(dumps({"b": b"x" * 100})) == 1
    with config.set(**{"comm.out-of-band-threshold": 10}):
        assert len(dumps({"b": b"x" * 100})) == 2


def test_large_message_mixing_buffers_and_pickles() -> None:
    msg = {"blob": b"z" * 8192, "obj": Booby(), "items": [b"q" * 5000, {"k": 2**70}]}
    got = loads(dumps(msg))
    assert bytes(got["blob"]) == msg["blob"]
    assert bytes(got["items"][0]) == msg["items"][0]
    assert isinstance(got["obj"], Serialized)
    assert got["items"][1]["k"].deserialize() == 2**70


def test_tuple_keys_round_trip_as_tuples() -> None:
    """Task keys such as ``("x", 0, 1)``, as values and as dict keys."""
    msg = {"keys": [("x", 0, 1), "y", 2, 1.5], "who_has": {("x", 0, 1): ["w"]}}
    got = roundtrip(msg)
    assert got == msg
    assert type(got["keys"][0]) is tuple
    big = {("x", 0): b"v" * 5000}
    assert {k: bytes(v) for k, v in loads(dumps(big, oob_threshold=1000)).items()} == big


def test_other_dict_keys_are_refused() -> None:
    with pytest.raises(TypeError, match="dict keys"):
        dumps({("x", frozenset({0})): b"v" * 5000})


def test_serialized_nested_in_a_pickle() -> None:
    s = serialize(np.arange(10))
    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps([s], protocol=5, buffer_callback=buffers.append)
    (inner,) = pickle.loads(data, buffers=buffers)
    np.testing.assert_array_equal(inner.deserialize(), np.arange(10))
    (inner4,) = pickle.loads(pickle.dumps([s], protocol=4))
    np.testing.assert_array_equal(inner4.deserialize(), np.arange(10))
    assert "Serialized" in repr(s)


def test_unpicklable_object_raises_at_dumps() -> None:
    with pytest.raises((TypeError, pickle.PicklingError)):
        dumps({"lock": threading.Lock()})


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "empty message"),
        ([b"\xc1"], "malformed message header"),
        ([b"\x92\x01"], "malformed message header"),
        ([msgpack.packb(1) + b"extra"], "malformed message header"),
        ([msgpack.packb(msgpack.ExtType(1, struct.pack("<II", 1, 1)))], "references frames 1..1"),
        ([msgpack.packb(msgpack.ExtType(4, struct.pack("<I", 0)))], "inline value 0"),
        ([msgpack.packb(msgpack.ExtType(2, struct.pack("<I", 5))), b"x"], "references frame 5"),
        ([msgpack.packb(msgpack.ExtType(1, struct.pack("<II", 1, 3))), b"x"], "references frames"),
        ([msgpack.packb(msgpack.ExtType(9, b"")), b"x"], "unknown extension"),
        ([msgpack.packb({"a": 1}), b"orphan frame"], "references 0"),
        ([msgpack.packb({(1, 2): 3}, use_bin_type=True)], "malformed message header"),
    ],
)
def test_loads_rejects_garbage(frames: list[bytes], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        loads(frames)


# ---------------------------------------------------------------- framing


def test_frame_prefix_layout() -> None:
    frames = [b"abc", memoryview(np.ones(2)), bytearray(5)]
    assert frame_prefix(frames) == struct.pack("<4Q", 3, 3, 16, 5)


def test_reader_handles_many_messages_in_one_feed() -> None:
    msgs = [{"i": i, "pad": "x" * i} for i in range(50)]
    reader = FrameReader()
    reader.feed(b"".join(wire(dumps(m)) for m in msgs))
    got = []
    while (frames := reader.next_message()) is not None:
        got.append(loads(frames))
    assert got == msgs
    assert not reader.in_message


def test_reader_fills_large_frames_in_place() -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB, above the in-place threshold
    data = wire(dumps({"p": payload, "tail": 1}))
    reader = FrameReader()
    for start in range(0, len(data), 10_000):
        assert reader.next_message() is None
        reader.feed(data[start : start + 10_000])
        assert reader.read_size >= 1
    frames = reader.next_message()
    assert frames is not None
    got = loads(frames)
    assert bytes(got["p"]) == payload
    assert got["tail"] == 1


def test_reader_lets_a_transport_fill_large_frames_directly() -> None:
    """``large_target``/``advance``: the path of a transport with ``receive_into``."""
    payload = np.arange(3 * 2**20 // 8, dtype=np.float64)  # 3 MiB: a mapped frame
    data = wire(dumps({"p": payload, "tail": 1}))
    reader = FrameReader()
    assert reader.large_target() is None
    reader.feed(data[:70_000])  # the prefix, the header and the start of the array
    assert reader.next_message() is None
    position = 70_000
    while (target := reader.large_target()) is not None:
        n = min(len(target), 1_000_000)  # a partial read, as a socket gives
        target[:n] = data[position : position + n]
        reader.advance(n)
        position += n
        target.release()
    reader.feed(data[position:])
    frames = reader.next_message()
    assert frames is not None
    got = loads(frames)
    assert np.array_equal(got["p"].deserialize(), payload)
    assert got["tail"] == 1


def test_large_receive_buffers_are_reused_once_free() -> None:
    from trioclust.protocol.framing import _BufferCache

    cache = _BufferCache()
    first = cache.take(3 * 2**20)
    first[:3] = b"abc"
    address = id(first.obj)
    second = cache.take(3 * 2**20)
    assert id(second.obj) != address  # the first is still in use
    del first
    third = cache.take(2 * 2**20)  # fits in the first's map, now free
    assert id(third.obj) == address
    assert third.nbytes == 2 * 2**20
    del second, third
    with config.set(**{"comm.receive-buffer-cache": 8 * 2**20}):
        big = cache.take(5 * 2**20)  # room made by dropping the free maps
        assert sum(len(m) for m in cache._maps) <= 8 * 2**20
        alone = cache.take(7 * 2**20)  # over the limit while big is held: not kept
        assert alone.obj not in cache._maps
        del big, alone
    with config.set(**{"comm.receive-buffer-cache": 0}):
        assert cache.take(3 * 2**20).obj not in cache._maps
    cache.clear()


def _prefix(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}Q", *values)


def test_reader_refuses_huge_frame_before_allocating() -> None:
    reader = FrameReader()
    reader.feed(_prefix(1, 2**50))  # a petabyte, and no data at all
    with pytest.raises(ProtocolError) as info:
        reader.next_message()
    assert str(info.value) == (
        "frame declares 1125899906842624 bytes, over the limit of 4294967296 (comm.max-frame-bytes)"
    )
    with pytest.raises(ProtocolError):  # stays failed
        reader.feed(b"more")


def test_reader_refuses_too_many_frames_before_reading_lengths() -> None:
    reader = FrameReader(max_frames=10)
    reader.feed(_prefix(11))
    with pytest.raises(
        ProtocolError, match=r"declares 11 frames, over the limit of 10 \(comm.max-frames\)"
    ):
        reader.next_message()


def test_reader_refuses_oversized_message_total() -> None:
    reader = FrameReader(max_frame_bytes=100, max_message_bytes=150)
    reader.feed(_prefix(2, 100, 100))
    with pytest.raises(
        ProtocolError, match=r"200 bytes in total, over the limit of 150 \(comm.max-message-bytes\)"
    ):
        reader.next_message()


def test_reader_refuses_zero_frames() -> None:
    reader = FrameReader()
    reader.feed(_prefix(0))
    with pytest.raises(ProtocolError, match="0 frames"):
        reader.next_message()


def test_reader_limits_default_to_config() -> None:
    with config.set(
        **{"comm.max-frames": 3, "comm.max-frame-bytes": 7, "comm.max-message-bytes": 9}
    ):
        reader = FrameReader()
    assert (reader.max_frames, reader.max_frame_bytes, reader.max_message_bytes) == (3, 7, 9)


def test_reader_in_message() -> None:
    reader = FrameReader()
    data = wire(dumps({"op": "x"}))
    reader.feed(data[:3])
    assert reader.in_message
    assert reader.next_message() is None
    reader.feed(data[3:])
    assert reader.next_message() is not None
    assert not reader.in_message


# -------------------------------------------------------------- task spec


def test_substitute_replaces_refs_in_nested_containers() -> None:
    args = (TaskRef("a"), [1, {"k": TaskRef("b"), "n": 2}], {"c": (TaskRef("a"),)})
    got = substitute(args, {"a": 10, "b": 20})
    assert got == (10, [1, {"k": 20, "n": 2}], {"c": (10,)})
    assert type(got) is tuple
    assert args[1][1]["k"] == TaskRef("b"), "the original was modified"


def test_substitute_returns_the_object_itself_when_nothing_to_replace() -> None:
    args = ([1, 2, {"x": (3, 4)}], {"y": "z"})
    assert substitute(args, {}) is args
    assert substitute(5, {}) == 5
    assert collect_refs(args) == set()


def test_substitute_leaves_other_containers_alone() -> None:
    s = {TaskRef("a")}
    assert substitute(s, {"a": 1}) is s


def test_substitute_missing_key() -> None:
    with pytest.raises(KeyError, match="no value for dependency 'gone'"):
        substitute([TaskRef("gone")], {})


def test_collect_refs() -> None:
    assert collect_refs([TaskRef("a"), {"x": (TaskRef("b"), [TaskRef("a")])}]) == {"a", "b"}
    assert collect_refs(TaskRef("solo")) == {"solo"}


def test_taskref_pickles_by_reference() -> None:
    data = cloudpickle.dumps(TaskRef("k"))
    assert b"trioclust.protocol.task_spec" in data
    assert pickle.loads(data) == TaskRef("k")
    with pytest.raises(AttributeError):
        TaskRef("k").key = "other"  # type: ignore[misc]


def test_importable_objects_pickle_by_reference_and_the_rest_by_value() -> None:
    import operator

    fast = serialize(operator.add)  # the standard pickler: a reference
    assert b"operator" in bytes(fast.frames[0])
    assert deserialize(fast) is operator.add
    offset = 3
    local = serialize(lambda x: x + offset)  # cloudpickle: by value
    assert deserialize(local)(1) == 4

    def pretend_main(x: int) -> int:
        return x * 2

    pretend_main.__module__ = "__main__"  # the worker has another __main__
    assert deserialize(serialize(pretend_main))(2) == 4


def test_modules_registered_by_value_travel_by_value() -> None:
    import types

    module = types.ModuleType("trioclust_by_value_example")
    exec("def triple(x):\n    return 3 * x\n", module.__dict__)
    sys.modules[module.__name__] = module
    cloudpickle.register_pickle_by_value(module)
    try:
        pickled = serialize(module.triple)
        del sys.modules[module.__name__]  # as on a worker that cannot import it
        assert deserialize(pickled)(2) == 6
    finally:
        cloudpickle.unregister_pickle_by_value(module)
        sys.modules.pop(module.__name__, None)
