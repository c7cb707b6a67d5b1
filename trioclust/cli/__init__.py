"""The ``trioclust`` command: ``trioclust scheduler`` and ``trioclust worker``."""

from trioclust.cli.main import main, scheduler_main, worker_main

__all__ = ["main", "scheduler_main", "worker_main"]
