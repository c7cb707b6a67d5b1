"""The sans-IO core: the scheduler's and the worker's state machines.

Nothing in this package performs I/O, blocks, reads a clock or imports an
async library: events go in through ``handle(*events)``, instructions come
out (see ``events.py`` and ``instructions.py``). A test enforces the imports.
"""

from trioclust.core.scheduler_state import SchedulerState
from trioclust.core.scheduler_tasks import TaskState, WorkerInfo
from trioclust.core.worker_state import WorkerState, WorkerTask
from trioclust.errors import KilledWorker, LostData

__all__ = [
    "KilledWorker",
    "LostData",
    "SchedulerState",
    "TaskState",
    "WorkerInfo",
    "WorkerState",
    "WorkerTask",
]
