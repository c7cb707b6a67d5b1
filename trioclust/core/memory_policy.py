"""A worker's memory policy: measurements in, actions out (Dask's four thresholds)."""

# Theory of operation
# ===================
#
# Every threshold is a fraction of the worker's ``memory_limit`` (Dask's
# names and defaults; ``None`` turns one off, a limit of 0 turns all off):
#
#   target     0.6   managed data beyond it moves to disk, least recently
#                    used first. The spill store enforces this one by
#                    itself, as data comes in (``target_bytes``), less the
#                    unmanaged memory of the last measurement
#                    (:meth:`MemoryPolicy.managed_target`): the interpreter,
#                    results still being made, a value being written out.
#                    Without that, a store filled to ``target`` plus the
#                    results running tasks build passes ``terminate`` before
#                    a measurement sees ``spill`` (24 results of 40 MiB on a
#                    300 MiB worker with two threads do). A measurement
#                    taken between tasks does not see the results the
#                    threads will build next, so the runtime also reserves
#                    ``making`` bytes for them: the tasks running in threads
#                    times the mean size of recent results (with two threads
#                    and 40 MiB results, the store keeps one less).
#   spill      0.7   process memory (RSS) beyond it: spill managed data, the
#                    least recently used first, until the process would be
#                    back under ``target`` (SpillData with the bytes to move).
#   pause      0.8   process memory beyond it: the worker starts no new task
#                    and tells its scheduler (PauseWorker); first, once per
#                    excursion, it gives freed heap back to the system
#                    (TrimMemory) and measures again. Below it: ResumeWorker.
#   terminate  0.95  process memory beyond it, measured by the nanny: it
#                    kills the worker (TerminateWorker) and starts a new one.
#
# The runtime measures every ``worker.memory.monitor-interval`` and hands
# :meth:`MemoryPolicy.worker_sample` a :class:`MemorySample`; after carrying
# out a TrimMemory or a SpillData it measures again at once and asks again,
# so that a pause is decided on memory as it is after trimming and spilling.
# Nothing here reads a clock or the process: tests feed numbers.

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MemoryAction",
    "MemoryPolicy",
    "MemorySample",
    "MemoryThresholds",
    "PauseWorker",
    "ResumeWorker",
    "SpillData",
    "TerminateWorker",
    "TrimMemory",
]


@dataclass(frozen=True, slots=True)
class MemoryThresholds:
    """Fractions of ``memory_limit``; ``None`` disables that step."""

    target: float | None = 0.6
    spill: float | None = 0.7
    pause: float | None = 0.8
    terminate: float | None = 0.95

    def __post_init__(self) -> None:
        for name in ("target", "spill", "pause", "terminate"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"worker.memory.{name} must be in (0, 1] or false, got {value!r}")


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One measurement of a worker process.

    Attributes:
        process: The process's resident set size, bytes.
        managed: Bytes of task results held in memory (by their sizes).
        spilled: Bytes of task results on disk.
    """

    process: int
    managed: int
    spilled: int = 0

    @property
    def unmanaged(self) -> int:
        """Process memory that is not task results: the interpreter, libraries,
        data a running task builds, freed memory not given back yet."""
        return max(0, self.process - self.managed)


@dataclass(frozen=True, slots=True)
class SpillData:
    """Move the least recently used results to disk, ``nbytes`` of them (or all)."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class TrimMemory:
    """Give freed heap memory back to the system (``malloc_trim``), then measure again."""


@dataclass(frozen=True, slots=True)
class PauseWorker:
    """Start no new task, and tell the scheduler to send no more."""

    process: int
    reason: str


@dataclass(frozen=True, slots=True)
class ResumeWorker:
    """Start tasks again, and tell the scheduler so."""

    process: int


@dataclass(frozen=True, slots=True)
class TerminateWorker:
    """Kill the worker process (the nanny starts a new one)."""

    process: int
    reason: str


MemoryAction = SpillData | TrimMemory | PauseWorker | ResumeWorker | TerminateWorker


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


class MemoryPolicy:
    """Decides what a worker (and its nanny) does about its memory.

    Args:
        memory_limit: The worker's limit, bytes; 0 for none (nothing is ever done).
        thresholds: The fractions; Dask's defaults when left out.

    Attributes:
        paused: Whether the last decision paused the worker.
    """

    def __init__(self, memory_limit: int, thresholds: MemoryThresholds | None = None) -> None:
        if memory_limit < 0:
            raise ValueError(f"memory_limit must be >= 0, got {memory_limit!r}")
        self.memory_limit = memory_limit
        self.thresholds = thresholds or MemoryThresholds()
        self.paused = False
        self._trimmed = False  # trimmed once in this excursion above pause

    def _bytes(self, fraction: float | None) -> int | None:
        if fraction is None or not self.memory_limit:
            return None
        return int(self.memory_limit * fraction)

    @property
    def target_bytes(self) -> int | None:
        """The most managed bytes kept in memory (the spill store's size), or None."""
        return self._bytes(self.thresholds.target)

    def managed_target(self, sample: MemorySample, making: int = 0) -> int | None:
        """The most managed bytes to keep in memory after this measurement:
        ``target`` less the unmanaged memory and less ``making`` (bytes
        reserved for the results the running tasks are building), so that
        the process as a whole stays near ``target``; None for no limit."""
        target = self.target_bytes
        if target is None:
            return None
        return max(0, target - sample.unmanaged - making)

    def worker_sample(self, sample: MemorySample) -> list[MemoryAction]:
        """What the worker does about this measurement, in order."""
        out: list[MemoryAction] = []
        process = sample.process
        spill = self._bytes(self.thresholds.spill)
        if spill is not None and process > spill and sample.managed > 0:
            below = self._bytes(self.thresholds.target) or spill
            out.append(SpillData(nbytes=min(sample.managed, process - below)))
        pause = self._bytes(self.thresholds.pause)
        if pause is None:
            return out
        if process > pause:
            if self.paused:
                return out
            if not self._trimmed:
                self._trimmed = True
                out.append(TrimMemory())
                return out
            self.paused = True
            assert self.thresholds.pause is not None
            out.append(
                PauseWorker(
                    process=process,
                    reason=(
                        f"process memory {process} bytes is over "
                        f"{_percent(self.thresholds.pause)} of memory_limit "
                        f"{self.memory_limit} bytes (worker.memory.pause)"
                    ),
                )
            )
            return out
        self._trimmed = False
        if self.paused:
            self.paused = False
            out.append(ResumeWorker(process=process))
        return out

    def nanny_sample(self, process: int) -> list[TerminateWorker]:
        """What the nanny does about its worker's process memory (RSS, bytes)."""
        terminate = self._bytes(self.thresholds.terminate)
        if terminate is None or process <= terminate:
            return []
        assert self.thresholds.terminate is not None
        return [
            TerminateWorker(
                process=process,
                reason=(
                    f"process memory {process} bytes is over "
                    f"{_percent(self.thresholds.terminate)} of memory_limit "
                    f"{self.memory_limit} bytes (worker.memory.terminate)"
                ),
            )
        ]
