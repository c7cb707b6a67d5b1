"""A stand-in Worker for the nanny's tests, run through the real worker_process module.

``python -m tests._fake_worker ARGS`` behaves like
``python -m trioclust.runtime.worker_process ARGS`` with a fake worker that
needs no scheduler. ``FAKE_WORKER_MODE`` picks its behaviour:

* ``serve`` (default): serves until closed; prints to stdout once started,
  which must end up on stderr, not on the control channel;
* ``lost``: stops by itself right after starting, as if it lost its scheduler;
* ``quit``: stops by itself right after starting, without giving a reason;
* ``crash-once``: if the file ``FAKE_WORKER_MARKER`` does not exist, writes
  its pid there and dies with ``os._exit(1)`` once it has reported its
  address; otherwise serves;
* ``crash-then-fail``: as ``crash-once``, but the replacements ``fail``;
* ``fail``: logs an error and raises before it starts;
* ``silent``: never finishes starting;
* ``hang-on-close``: serves, but its graceful close never finishes.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import trio
import trio.testing

from trioclust.runtime import worker_process

logger = logging.getLogger("tests.fake_worker")


class FakeWorker:
    def __init__(self, scheduler_address: str, **kwargs: Any) -> None:
        self.scheduler_address = scheduler_address
        self.kwargs = kwargs
        self.address = ""
        self.close_reason: str | None = None
        self._close_requested = trio.Event()
        self._closed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        mode = os.environ.get("FAKE_WORKER_MODE", "serve")
        try:
            if mode == "crash-then-fail" and await trio.Path(os.environ["FAKE_WORKER_MARKER"]).exists():
                mode = "fail"
            if mode == "fail":
                logger.error("fake start failure: cannot reach %s", self.scheduler_address)
                raise OSError(f"fake worker could not connect to {self.scheduler_address}")
            if mode == "silent":
                await trio.sleep_forever()
            crash = False
            if mode in ("crash-once", "crash-then-fail"):
                marker = trio.Path(os.environ["FAKE_WORKER_MARKER"])
                crash = not await marker.exists()
                if crash:
                    await marker.write_text(str(os.getpid()))
            self.address = f"fake://127.0.0.1:{os.getpid()}"
            logger.info("fake worker serves at %s with %s", self.address, self.kwargs)
            task_status.started()
            if mode == "lost":
                self.close_reason = f"lost the scheduler at {self.scheduler_address} (fake)"
                return
            if mode == "quit":
                return
            if crash:
                await trio.testing.wait_all_tasks_blocked()  # the address is out
                logger.error("fake worker crashes now")
                os._exit(1)
            print("printed by a task", flush=True)
            await self._close_requested.wait()
            logger.info("fake worker leaves its scheduler")
        finally:
            self._closed.set()

    async def close(self) -> None:
        if os.environ.get("FAKE_WORKER_MODE") == "hang-on-close":
            logger.info("fake worker hangs in close()")
            await trio.sleep_forever()
        self._close_requested.set()
        await self._closed.wait()

    async def wait_closed(self) -> None:
        await self._closed.wait()


if __name__ == "__main__":
    sys.exit(worker_process.main(worker_factory=FakeWorker))
