"""The worker's own threads for user functions.

Why not ``trio.to_thread``: its threads are process-wide and linger after the
worker has closed, and each call costs a trio task. A worker owns exactly
``nthreads`` threads, started with it and joined when it closes.

Finished jobs go on a deque, and the first of a burst schedules one
``TrioToken.run_sync_soon`` delivery that hands the event loop everything
finished so far. Short tasks therefore come back in groups, which become one
batch on the wire, instead of costing the loop a wake-up each.

A job submitted alone (nothing else queued or running) while recent jobs
took under ``short_job`` seconds on average is waited for right there, by the
event loop's thread, for up to ``short_wait``: blocked on a lock, that thread
lets the job's thread take the GIL at once (rather than when the loop next
sleeps), and the result comes back through that lock, without a pass
through the event loop. A job that turns out longer is handed back the usual
way; the loop lost at most ``short_wait``, and only while it had nothing else
running. A job submitted while results are being handed over (a finished
task's successor, queued on the worker) is not waited for: that would nest
one delivery inside another, as deep as the queue is long.

Seceding and rejoining (``secede()``, ``rejoin()``, ``worker_client``): a job
that waits on other tasks calls :meth:`ThreadPool.secede` from its thread,
which then stops counting as one of the pool's ``nthreads``; a new thread
takes its place at once, and the seceded thread ends when its job does.
:meth:`ThreadPool.rejoin` makes a seceded thread a pool thread again: it
queues a marker behind the jobs already queued and waits; the pool thread
that takes the marker hands over its place and ends. So at most
``nthreads`` threads run pool jobs at once, and the pool holds ``nthreads``
plus the seceded threads (``peak_threads`` says how many at most).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from trioclust.comm.link import writes_deferred

logger = logging.getLogger("trioclust.worker")

_STOP = object()
_local = threading.local()  # .pool: the ThreadPool of this thread; .seceded


class _Rejoin:
    """A seceded thread's request for a pool thread's place (see the notes)."""

    __slots__ = ("event", "state")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.state = "pending"  # then "granted", or "refused" by aclose
_DURATION_WEIGHT = 0.2  # of the newest job in ThreadPool.mean_duration


class ThreadPool:
    """``nthreads`` threads running jobs; results come back through ``run_sync_soon``.

    Args:
        nthreads: how many threads.
        name: the threads' name prefix.
        short_job: jobs are short while their mean wall time is under this
            (seconds); a short job submitted alone is waited for.
        short_wait: how long :meth:`submit` waits for such a job, at most.
    """

    def __init__(
        self,
        nthreads: int,
        *,
        name: str = "trioclust-worker",
        short_job: float = 200e-6,
        short_wait: float = 500e-6,
    ) -> None:
        self.nthreads = nthreads
        self.short_job = short_job
        self.short_wait = short_wait
        self._name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._token: trio.lowlevel.TrioToken | None = None
        # the threads' bookkeeping, for seceding and rejoining
        self._threads_lock = threading.Lock()
        self._alive = 0
        self._closing = False
        self._rejoins: list[_Rejoin] = []
        #: the most threads this pool held at once (seceded ones included)
        self.peak_threads = 0
        self._exited = 0
        self._all_exited = trio.Event()
        self._finished: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._delivery_pending = False
        self._in_flight = 0  # submitted and not yet delivered (event loop thread only)
        self._delivering = False  # in _deliver (event loop thread only)
        # the loop thread waiting for a short job: a flag under a lock, and a
        # lock held until the job's thread releases it
        self._waiting_lock = threading.Lock()
        self._waiting = False
        self._waited = threading.Lock()
        self._waited.acquire()
        #: seconds a job took, averaged over the last few (an exponential
        #: moving average, written by the threads); 0.0 before the first
        self.mean_duration = 0.0

    def start(self) -> None:
        """Start the threads; call from within the trio run that receives results."""
        self._token = trio.lowlevel.current_trio_token()
        with self._threads_lock:
            for _ in range(self.nthreads):
                self._start_thread()

    def _start_thread(self) -> None:
        """Start one more thread; call holding ``_threads_lock``."""
        thread = threading.Thread(
            target=self._loop, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._alive += 1
        self.peak_threads = max(self.peak_threads, self._alive)
        self._threads.append(thread)
        thread.start()

    @property
    def threads_alive(self) -> int:
        """Threads running now: the pool's ``nthreads`` and the seceded ones."""
        return self._alive

    def secede(self) -> bool:
        """Take the calling thread out of the pool; a new thread replaces it.

        Call it from a job of this pool. Returns False (and does nothing)
        when the calling thread is not one of this pool's, or seceded already.
        """
        if getattr(_local, "pool", None) is not self or _local.seceded:
            return False
        _local.seceded = True
        with self._threads_lock:
            if not self._closing:
                self._start_thread()
        return True

    def rejoin(self) -> None:
        """Make the calling seceded thread a pool thread again, once one of
        the pool's places is free (the jobs queued before go first).

        Does nothing on a thread that has not seceded. While the pool closes
        the thread stays seceded and ends with its job.
        """
        if getattr(_local, "pool", None) is not self or not _local.seceded:
            return
        request = _Rejoin()
        with self._threads_lock:
            if self._closing:
                return
            self._rejoins.append(request)
        self._jobs.put(request)
        request.event.wait()
        with self._threads_lock:
            if request in self._rejoins:
                self._rejoins.remove(request)
            if request.state == "granted":
                _local.seceded = False

    @property
    def thread_ids(self) -> list[int]:
        """The idents of the pool's threads (for sampling their stacks)."""
        return [t.ident for t in self._threads if t.ident is not None]

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``job()`` on a thread; then ``done(job's return value)`` on the trio thread.

        ``job`` must not raise: wrap user code so that it returns its outcome.
        A short job submitted alone is waited for here (see the module's
        notes), and then ``done`` has run when this returns.
        """
        self._in_flight += 1
        self._jobs.put((job, done))
        if self._in_flight == 1 and not self._delivering and 0.0 < self.mean_duration < self.short_job:
            self._wait_for_job()

    def _wait_for_job(self) -> None:
        with self._waiting_lock:
            self._waiting = True
        got = False
        try:
            got = self._waited.acquire(timeout=self.short_wait)
        finally:  # also when a signal interrupts the wait: later jobs come back as usual
            with self._waiting_lock:
                if not got:  # released after the timeout but before this lock?
                    got = self._waited.acquire(blocking=False)
                self._waiting = False
        if got:
            self._deliver()

    def _loop(self) -> None:
        token = self._token
        assert token is not None
        _local.pool = self
        _local.seceded = False
        try:
            while True:
                item = self._jobs.get()
                if item is _STOP:
                    return
                if type(item) is _Rejoin:
                    with self._threads_lock:
                        if item.state != "pending":
                            continue  # refused by aclose: keep this place
                        item.state = "granted"
                    item.event.set()
                    return  # the rejoining thread takes this place
                job, done = item
                start = time.perf_counter()
                outcome = job()
                duration = time.perf_counter() - start
                self.mean_duration += (duration - self.mean_duration) * _DURATION_WEIGHT
                self._finished.append((done, outcome))
                # hold nothing of this job while waiting for the next: a
                # result kept alive here would survive its spill to disk
                del item, job, done, outcome
                self._hand_over(token)
                if _local.seceded:
                    return  # replaced in the pool already
        except trio.RunFinishedError:
            return
        finally:
            with self._threads_lock:
                self._alive -= 1
            try:
                token.run_sync_soon(self._thread_exited)
            except trio.RunFinishedError:
                pass

    def _hand_over(self, token: trio.lowlevel.TrioToken) -> None:
        """Wake the loop's thread for the job just finished, unless it is
        waiting for it or a delivery is due anyway."""
        with self._waiting_lock:
            if self._waiting:  # the loop's thread waits for this job
                self._waiting = False
                self._waited.release()
                return
        if not self._delivery_pending:
            self._delivery_pending = True
            token.run_sync_soon(self._deliver)

    def _deliver(self) -> None:
        """In the loop thread: hand over every finished job, oldest first."""
        self._delivery_pending = False
        finished = self._finished
        outer, self._delivering = self._delivering, True
        try:
            # what the callbacks send (task-finished) leaves in one write per link
            with writes_deferred():
                while finished:
                    done, outcome = finished.popleft()
                    self._in_flight -= 1
                    done(outcome)
        finally:
            self._delivering = outer

    def _thread_exited(self) -> None:
        self._exited += 1
        with self._threads_lock:
            started = len(self._threads)
        if self._exited >= started and self._closing:
            self._all_exited.set()

    async def aclose(self, timeout: float) -> None:
        """Stop the threads: idle ones at once, busy ones when their job ends.

        A thread still running user code after ``timeout`` seconds is left to
        finish on its own (Python cannot stop a thread) and is logged.
        """
        if not self._threads:
            return
        with self._threads_lock:
            self._closing = True
            for request in self._rejoins:  # they stay seceded and end with their jobs
                request.state = "refused"
                request.event.set()
            self._rejoins.clear()
        for _ in range(self.nthreads):  # the pool's places; seceded threads end alone
            self._jobs.put(_STOP)
        with trio.move_on_after(timeout) as scope:
            scope.shield = True
            await self._all_exited.wait()
        if scope.cancelled_caught:
            busy = [t.name for t in self._threads if t.is_alive()]
            logger.warning(
                "Threads %s are still running a task after %.1f s; leaving them to finish", busy, timeout
            )
        for thread in self._threads:
            if not thread.is_alive():
                thread.join()
