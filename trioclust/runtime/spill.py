"""A worker's results, in memory up to a size and on disk beyond it (zict).

Theory of operation
-------------------
:class:`SpillStore` is the mapping a worker's :class:`WorkerState` keeps its
results in. It is a ``zict.Buffer``: the *fast* side a dict, least recently
used first, holding at most ``target`` bytes (by each value's size); the
*slow* side a ``zict.Func`` that pickles into a ``zict.File`` (one file per
key) in a temporary directory of the worker's own. Storing a result that
makes the fast side bigger than ``target`` moves the least recently used ones
to disk; reading a spilled key (a task's input, a peer's or a client's
``get-data``) loads it back into memory, transparently. :meth:`evict`
moves more to disk when the process as a whole is over the spill threshold
(see :mod:`trioclust.core.memory_policy`). The directory is removed by
:meth:`close`.

Small values (at most :data:`SMALL` bytes) skip zict: they stay in a plain
dict, up to 1% of ``target`` bytes of them, and are never spilled. Most
tasks' results are that small, and zict's bookkeeping (locks, weights, LRU
order) costs about 20 us per stored and deleted value, a tenth of what a
short task costs the worker in all; writing a few bytes to a file of their
own would free nothing worth it.

Sizes: a value's size is the one its task reported (its pickled size), given
through :meth:`expect_size` before it is stored; otherwise an estimate
(``nbytes`` of arrays, the length of bytes and strings, a shallow sum for
containers).

:func:`trim_memory` calls glibc's ``malloc_trim(0)`` where there is one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import pickle
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from typing import Any

import zict

from trioclust import config
from trioclust.core.keys import Key
from trioclust.core.memory_policy import MemoryThresholds

__all__ = ["SpillStore", "memory_thresholds", "sizeof", "trim_memory"]

logger = logging.getLogger("trioclust.worker")


def memory_thresholds() -> MemoryThresholds:
    """The ``worker.memory.*`` fractions from the config (false: off)."""

    def fraction(name: str) -> float | None:
        value = config.get(f"worker.memory.{name}")
        return None if value is None or value is False else float(value)

    return MemoryThresholds(
        target=fraction("target"),
        spill=fraction("spill"),
        pause=fraction("pause"),
        terminate=fraction("terminate"),
    )


def sizeof(value: object) -> int:
    """An estimate of the bytes ``value`` holds."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, bytes | bytearray | str):
        return len(value) + 49
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        shallow = sys.getsizeof(value)
        if len(items) > 100:  # a sample, as dask.sizeof does
            sample = items[:: len(items) // 100]
            return shallow + sum(sizeof(v) for v in sample) * len(items) // len(sample)
        return shallow + sum(sizeof(v) for v in items)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k) + sizeof(v) for k, v in value.items())
    try:
        return sys.getsizeof(value)
    except TypeError:
        return 64


_libc: Any = None
_libc_looked = False


def trim_memory() -> bool:
    """Give freed heap memory back to the system: glibc's ``malloc_trim(0)``.

    Returns:
        Whether it could be called (Linux with glibc); False elsewhere.
    """
    global _libc, _libc_looked
    if not _libc_looked:
        _libc_looked = True
        if sys.platform.startswith("linux"):
            try:
                _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _libc.malloc_trim  # noqa: B018 - musl has none
            except (OSError, AttributeError):
                _libc = None
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


SMALL = 1024
"""Values of at most this many bytes stay in memory, outside zict (see above)."""

_RAW_BYTES = 1  # a bytes value, written as it is
_PICKLED = 0  # a pickle (protocol 5) and its out-of-band buffers


def _dump(value: object) -> list[bytes | memoryview]:
    """Frames for the file, without copying large buffers: a header (kind,
    count, lengths), then the frames."""
    if type(value) is bytes:
        frames: list[bytes | memoryview] = [value]
        kind = _RAW_BYTES
    else:
        buffers: list[pickle.PickleBuffer] = []
        main = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        frames = [main, *(b.raw() for b in buffers)]
        kind = _PICKLED
    lengths = [len(f) if isinstance(f, bytes) else f.nbytes for f in frames]
    header = struct.pack(f"<BQ{len(frames)}Q", kind, len(frames), *lengths)
    return [header, *frames]


def _load(data: bytes) -> object:
    kind, count = struct.unpack_from("<BQ", data)
    offset = struct.calcsize("<BQ")
    lengths = struct.unpack_from(f"<{count}Q", data, offset)
    offset += 8 * count
    view = memoryview(data)
    frames = []
    for length in lengths:
        frames.append(view[offset : offset + length])
        offset += length
    if kind == _RAW_BYTES:
        return bytes(frames[0])
    return pickle.loads(frames[0], buffers=frames[1:])


class SpillStore(MutableMapping[Key, object]):
    """Results in memory up to ``target`` bytes, the least recently used on disk.

    Args:
        target: The most bytes kept in memory; None for no limit (nothing
            spills unless :meth:`evict` is called).
        directory: Where to make the spill directory; the system's temporary
            directory when None.
    """

    def __init__(self, target: int | None, directory: str | None = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="trioclust-spill-", dir=directory)
        self._sizes: dict[Key, int] = {}
        self._expected: dict[Key, int] = {}
        self._small: dict[Key, object] = {}  # values of at most SMALL bytes
        self._small_bytes = 0
        self._small_budget = float("inf") if target is None else target / 100
        self.spilled_bytes = 0
        self.spill_count = 0  # values moved to disk, ever
        self.unspill_count = 0  # values read back from disk, ever
        # zict.File writes a list of frames as they are (its annotation says bytes)
        slow = zict.Func(_dump, _load, _FilesByKey(zict.File(self.directory)))  # type: ignore[arg-type]
        self._buffer: zict.Buffer[Key, object] = zict.Buffer(
            {},
            slow,
            n=float("inf") if target is None else target,
            weight=self._weight,
            fast_to_slow_callbacks=self._spilled,
            slow_to_fast_callbacks=self._unspilled,
        )

    # --------------------------------------------------------------- figures

    @property
    def memory_bytes(self) -> int:
        """Bytes of the values held in memory ("managed" memory)."""
        return int(self._buffer.fast.total_weight) + self._small_bytes

    @property
    def spilled_count(self) -> int:
        """How many values are on disk now."""
        return len(self._buffer.slow)

    def expect_size(self, key: Key, nbytes: int) -> None:
        """The size of the value about to be stored under ``key`` (its pickled size)."""
        self._expected[key] = nbytes

    def drop_expected(self, key: Key) -> None:
        """Forget a size given by :meth:`expect_size` for a value never stored."""
        self._expected.pop(key, None)

    def _weight(self, key: Key, value: object) -> float:
        size = self._expected.pop(key, None)
        if size is None:
            size = self._sizes.get(key)  # read back from disk: the size it had
        if size is None:
            size = sizeof(value)
        self._sizes[key] = size
        return size

    def _spilled(self, key: Key, value: object) -> None:
        self.spilled_bytes += self._sizes.get(key, 0)
        self.spill_count += 1

    def _unspilled(self, key: Key, value: object) -> None:
        self.spilled_bytes -= self._sizes.get(key, 0)
        self.unspill_count += 1

    # ------------------------------------------------------------ spilling

    @property
    def target(self) -> float:
        """The most bytes kept in memory; setting it moves the excess to disk."""
        return self._buffer.n

    @target.setter
    def target(self, nbytes: float) -> None:
        self._buffer.n = nbytes
        try:
            self._buffer.fast.evict_until_below_target()
        except OSError as exc:  # a full disk: keep the rest in memory
            logger.error("Could not spill to %s: %s", self.directory, exc)

    def evict(self, nbytes: int) -> int:
        """Move the least recently used values to disk until ``nbytes`` have
        gone (or none is left in memory).

        Returns:
            The bytes moved.
        """
        moved = 0
        fast = self._buffer.fast
        while moved < nbytes and len(fast):
            try:
                _, _, weight = fast.evict()
            except OSError as exc:  # a full disk: keep the rest in memory
                logger.error("Could not spill to %s: %s", self.directory, exc)
                break
            moved += int(weight)
        return moved

    # --------------------------------------------------- the mapping itself

    def __getitem__(self, key: Key) -> object:
        try:
            return self._small[key]
        except KeyError:
            return self._buffer[key]

    def __setitem__(self, key: Key, value: object) -> None:
        if key in self._sizes:  # every stored key has its size there
            del self[key]
        size = self._expected.get(key)
        if size is None:
            size = sizeof(value)
        if size <= SMALL and self._small_bytes + size <= self._small_budget:
            self._expected.pop(key, None)
            self._small[key] = value
            self._sizes[key] = size
            self._small_bytes += size
            return
        self._expected[key] = size  # for _weight
        self._buffer[key] = value

    def __delitem__(self, key: Key) -> None:
        if key in self._small:
            del self._small[key]
            self._small_bytes -= self._sizes.pop(key)
            return
        if key in self._buffer.slow:
            self.spilled_bytes -= self._sizes.get(key, 0)
        del self._buffer[key]
        self._sizes.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._small or key in self._buffer

    def __iter__(self) -> Iterator[Key]:
        yield from self._small
        yield from self._buffer

    def __len__(self) -> int:
        return len(self._small) + len(self._buffer)

    def clear(self) -> None:
        """Drop every value, on disk too."""
        self._small.clear()
        self._small_bytes = 0
        self._buffer.clear()
        self._sizes.clear()
        self._expected.clear()
        self.spilled_bytes = 0

    def close(self) -> None:
        """Drop everything and remove the spill directory."""
        try:
            self.clear()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class _FilesByKey(MutableMapping[Key, object]):
    """``zict.File`` names each file after its (string) key; task keys may be
    numbers or tuples, so each key gets a file name of its own here."""

    def __init__(self, files: zict.File) -> None:
        self._files = files
        self._names: dict[Key, str] = {}
        self._counter = itertools.count()

    def __getitem__(self, key: Key) -> object:
        return self._files[self._names[key]]

    def __setitem__(self, key: Key, value: object) -> None:
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = str(next(self._counter))
        self._files[name] = value  # type: ignore[assignment]

    def __delitem__(self, key: Key) -> None:
        del self._files[self._names.pop(key)]

    def __contains__(self, key: object) -> bool:
        # MutableMapping's would read the whole file (``self[key]``)
        return key in self._names

    def __iter__(self) -> Iterator[Key]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
