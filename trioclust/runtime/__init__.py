"""The servers: Scheduler, Worker and Nanny, each a trio service around the core."""

from trioclust.runtime.nanny import Nanny
from trioclust.runtime.scheduler import Scheduler
from trioclust.runtime.worker import Worker

__all__ = ["Nanny", "Scheduler", "Worker"]
