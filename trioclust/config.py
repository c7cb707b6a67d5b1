"""Every default in one place, overridable from a TOML file and the environment.

Precedence, highest first:

1. values set in code with :func:`set` (a context manager, for tests and tools);
2. ``TRIOCLUST_*`` environment variables: the key upper-cased, ``.`` written
   ``__`` and ``-`` written ``_`` (``comm.timeouts.connect`` is
   ``TRIOCLUST_COMM__TIMEOUTS__CONNECT``); the value is read as TOML when it
   parses (``5``, ``2.5``, ``true``) and as a plain string otherwise;
3. the TOML file named by ``TRIOCLUST_CONFIG``, else
   ``~/.config/trioclust/config.toml``; nested tables map onto dotted keys;
4. :data:`DEFAULTS`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    # where Client() without an address connects (None: nowhere configured)
    "scheduler-address": None,
    # how long to keep trying to reach a peer before giving up, seconds
    "comm.timeouts.connect": 10.0,
    # how long a new connection has to complete the handshake, seconds
    "comm.timeouts.handshake": 5.0,
    # largest single frame and largest whole message accepted, bytes
    "comm.max-frame-bytes": 4 * 2**30,
    "comm.max-message-bytes": 8 * 2**30,
    # largest frame and message accepted from a peer that has not completed
    # the handshake yet (and the most connections that may be in that state
    # at once, per listener; more are closed as they come)
    "comm.max-handshake-bytes": 64 * 1024,
    "comm.max-handshaking-connections": 1024,
    # most frames one message may declare
    "comm.max-frames": 1_000_000,
    # bytes objects at least this large travel as their own frame, uncopied
    "comm.out-of-band-threshold": 4096,
    # bytes of large receive buffers a process keeps for reuse once nothing
    # refers to them any more (a fresh buffer's pages cost a fault each)
    "comm.receive-buffer-cache": 512 * 2**20,
    # a link that wrote less than this long ago (seconds) and holds only
    # messages sent as not urgent waits out the rest before its next write,
    # gathering more into the batch; an idle link, or an urgent message,
    # writes at once. 0: every write as soon as possible
    "comm.linger": 0.001,
    # a message nothing waits for (a client's releases, a scheduler's order to
    # drop data) waits up to this long (seconds) for company even on an idle
    # link, unless something urgent comes first: it usually leaves with the
    # next message there instead of waking the peer on its own
    "comm.lazy-linger": 0.01,
    # a task whose workers died more than this many times errs with KilledWorker
    "scheduler.allowed-failures": 3,
    # a worker silent (no heartbeat) this long is removed, seconds
    "scheduler.worker-ttl": 30.0,
    # tasks without dependencies are sent to a worker while it holds fewer than
    # nthreads * saturation of them; the rest wait on the scheduler ("queued"),
    # where workers that join later can still get them. Higher values mean
    # bigger message batches (throughput); "inf" sends everything at once.
    "scheduler.worker-saturation": 32.0,
    # ... this many instead for root tasks (tasks without dependencies whose
    # results other tasks wait for: a reduction's leaves) on a worker that
    # stores more than root-memory-fraction of its memory limit. Their results
    # stay there until the dependents run: sent few at a time, the partial
    # sums keep up and a sum over thousands of 8 MB chunks holds a few chunks
    # per worker instead of dozens; small results never slow down to that
    "scheduler.root-saturation": 1.1,
    "scheduler.root-memory-fraction": 0.1,
    # move tasks a busy worker has not started to hungry workers (docs/scheduling.md)
    "scheduler.work-stealing": True,
    # seconds between the scheduler's looks for stranded tasks (queued behind
    # a long task while another worker has a thread free); one still stranded
    # on the next look moves
    "scheduler.work-stealing-interval": 0.1,
    # check the scheduler's state machine as it runs: a recommendation the
    # transition table lacks (and that is not stale by design) raises
    # InvalidTransition with the key's story instead of being dropped
    "scheduler.validate": False,
    # transitions the scheduler keeps for Scheduler.story(key)
    "scheduler.transition-log-length": 100_000,
    # a client whose scheduler link broke fails its pending futures and tries
    # to reconnect to the same address this long, seconds (every call raises
    # SchedulerLostError meanwhile; new work goes through once it is back);
    # then, or at once with 0, every call raises SchedulerLostError
    "client.reconnect-timeout": 30.0,
    "worker.heartbeat-interval": 1.0,
    # a worker that lost its scheduler keeps trying to reconnect this long, seconds
    "worker.reconnect-timeout": 60.0,
    # longest a worker waits for a peer's reply to one fetch of dependencies,
    # seconds; then it fetches them from another holder, or the scheduler
    # recomputes them (a frozen or cut-off peer never stalls a graph)
    "worker.fetch-timeout": 60.0,
    # results that pickle to at most this many bytes travel with the
    # task-finished message, so the client needs no second round trip
    "worker.inline-result-limit": 64 * 1024,
    # tasks a worker hands its thread pool beyond one per thread, per thread:
    # a thread that finishes a task starts the next without waiting for the loop
    "worker.prefetch-per-thread": 1,
    # ... this many instead while the recent tasks were short enough that the
    # queue holds less than worker.prefetch-duration seconds of work
    "worker.prefetch-short-tasks": 3,
    "worker.prefetch-duration": 0.001,
    # parallel gathers of dependencies one worker runs at once
    "worker.max-concurrent-gathers": 16,
    # as scheduler.validate and scheduler.transition-log-length, for a worker
    "worker.validate": False,
    "worker.transition-log-length": 100_000,
    # worker memory, as fractions of memory_limit (Dask's names; false turns
    # one off): results beyond target move to disk, least recently used first;
    # process memory (RSS) beyond spill spills until below target; beyond
    # pause the worker starts no new tasks (the scheduler sends it none);
    # beyond terminate its nanny restarts it. Measured every monitor-interval s
    "worker.memory.target": 0.6,
    "worker.memory.spill": 0.7,
    "worker.memory.pause": 0.8,
    "worker.memory.terminate": 0.95,
    "worker.memory.monitor-interval": 0.1,
    # where workers make their spill directories (a temporary one each,
    # removed when the worker closes); None: the system's temporary directory
    "worker.memory.spill-directory": None,
    # the nanny's escalation on close: ask, then SIGTERM, then SIGKILL, seconds each
    "nanny.close-timeout": 5.0,
    "nanny.terminate-timeout": 3.0,
    # how long a new worker process may take to start and register, seconds
    "nanny.start-timeout": 60.0,
    # deaths in quick succession after which the nanny waits before restarting
    "nanny.restart-backoff": 0.5,
    # bounded cleanup when closing servers, seconds
    "runtime.close-timeout": 5.0,
    # where the scheduler serves its dashboard: ":8787" is port 8787 on the
    # scheduler's host; a taken port falls back to a free one, with a warning
    "scheduler.dashboard-address": ":8787",
    # how often the /status page refreshes itself, seconds
    "dashboard.refresh-interval": 0.5,
    # finished task runs the dashboard remembers, and how many the page shows
    "dashboard.task-stream-length": 10_000,
    # heartbeats kept for the workers' CPU and memory over time (all workers)
    "dashboard.worker-history-length": 10_000,
    "dashboard.page-stream-length": 1000,
}

_lock = threading.Lock()
_overrides: dict[str, Any] = {}
_file_cache: dict[str, Any] | None = None
_file_cache_path: str | None = None


def _env_name(key: str) -> str:
    return "TRIOCLUST_" + key.upper().replace(".", "__").replace("-", "_")


def _parse_env(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def config_path() -> Path:
    """The TOML file consulted: ``$TRIOCLUST_CONFIG`` or ``~/.config/trioclust/config.toml``."""
    named = os.environ.get("TRIOCLUST_CONFIG")
    if named:
        return Path(named).expanduser()
    return Path.home() / ".config" / "trioclust" / "config.toml"


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _file_values() -> dict[str, Any]:
    global _file_cache, _file_cache_path
    path = config_path()
    with _lock:
        if _file_cache is not None and _file_cache_path == str(path):
            return _file_cache
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            values = _flatten(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"Could not read the trioclust config file {path}: {exc}") from exc
    with _lock:
        _file_cache, _file_cache_path = values, str(path)
    return values


def get(key: str, default: Any = ...) -> Any:
    """The value of a setting, by dotted key (``"comm.timeouts.connect"``).

    Args:
        key: the setting's dotted name.
        default: returned when nothing sets the key; without it an unknown key
            raises ``KeyError``.
    """
    with _lock:
        if key in _overrides:
            return _overrides[key]
    env = os.environ.get(_env_name(key))
    if env is not None:
        return _parse_env(env)
    file_values = _file_values()
    if key in file_values:
        return file_values[key]
    if key in DEFAULTS:
        return DEFAULTS[key]
    if default is not ...:
        return default
    raise KeyError(f"Unknown trioclust setting {key!r}; known settings: {sorted(DEFAULTS)}")


def get_float(key: str) -> float:
    """:func:`get`, converted to ``float`` (``"inf"`` is accepted)."""
    return float(get(key))


def get_int(key: str) -> int:
    """:func:`get`, converted to ``int``."""
    return int(get(key))


@contextlib.contextmanager
def set(**values: Any) -> Iterator[None]:
    """Override settings for the duration of a ``with`` block.

    Keyword names use ``__`` for ``.`` and ``_`` for ``-``:
    ``config.set(comm__timeouts__connect=1)``. A mapping can be passed with
    dotted keys instead: ``config.set(**{"comm.timeouts.connect": 1})``.
    """
    keys = {k if "." in k else k.replace("__", ".").replace("_", "-"): v for k, v in values.items()}
    with _lock:
        saved = {k: _overrides[k] for k in keys if k in _overrides}
        _overrides.update(keys)
    try:
        yield
    finally:
        with _lock:
            for k in keys:
                _overrides.pop(k, None)
            _overrides.update(saved)
