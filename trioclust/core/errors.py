"""Exceptions the core itself decides on (it creates them; the runtime ships them)."""

from __future__ import annotations


class KilledWorker(Exception):
    """A task was running on workers that died ``allowed_failures + 1`` times.

    The task itself probably kills its worker (a segfault, running out of
    memory, ``os._exit``). Look at the workers' logs; raise
    ``allowed_failures`` in the config only if the deaths were unrelated.
    """

    def __init__(self, key: str, last_worker: str, allowed_failures: int) -> None:
        super().__init__(key, last_worker, allowed_failures)
        self.key = key
        self.last_worker = last_worker
        self.allowed_failures = allowed_failures

    def __str__(self) -> str:
        return (
            f"Task {self.key!r} was running on {self.allowed_failures + 1} workers that died "
            f"(the last one {self.last_worker}); it probably kills its worker. Check the "
            f"worker logs, or raise 'scheduler.allowed-failures' if the deaths were unrelated."
        )


class LostData(Exception):
    """Scattered data was lost with the workers that held it and cannot be recomputed."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return (
            f"The scattered data {self.key!r} was lost with the worker(s) that held it; "
            f"it has no task to recompute it from. Scatter it again."
        )
