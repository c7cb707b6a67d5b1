"""Every exception trioclust raises on purpose, in one place.

Each subclasses :class:`TrioclustError`, so ``except TrioclustError`` catches
anything trioclust decided to raise, and also the builtin a caller would
catch without knowing trioclust: a broken connection is a
``ConnectionError`` (an ``OSError``), a timeout a ``TimeoutError``, a bad
address a ``ValueError``, a cancelled future a
``concurrent.futures.CancelledError``. docs/api.md has the table.

This module imports the standard library only, so every layer may import it,
the sans-IO core included.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Hashable, Sequence
from typing import Any

__all__ = [
    "ActorLostError",
    "ClusterStartError",
    "CommClosedError",
    "ConnectTimeout",
    "EncryptionRequiredError",
    "FutureCancelledError",
    "HandshakeTimeout",
    "InvalidTransition",
    "KilledWorker",
    "LostData",
    "NannyClosedError",
    "ProtocolError",
    "RemoteError",
    "SchedulerLostError",
    "TLSConnectionError",
    "TransportHandshakeError",
    "TrioclustError",
    "WebSocketHandshakeError",
    "WorkerStartError",
]


class TrioclustError(Exception):
    """The base of every exception trioclust raises on purpose.

    Each subclass also keeps the builtin base a caller would catch
    (``ConnectionError``, ``TimeoutError``, ``ValueError``, ...).
    """


# ------------------------------------------------------------ the wire protocol
class ProtocolError(TrioclustError):
    """A peer sent bytes that are not trioclust's wire protocol.

    Raised for malformed framing (a declared size over a limit, garbage
    headers), messages that reference frames they do not carry, and failed
    handshakes. The connection that produced it cannot be trusted any more and
    is closed; other connections are unaffected.
    """


# ------------------------------------------------------------ transports
# :func:`trioclust.transport.connect` retries a peer that refuses or cannot be
# reached (any ``OSError``) until its timeout. A peer that *was* reached but
# failed the transport's own handshake (TLS, the websocket upgrade) would
# refuse the same certificate again: those failures are raised at once.
class ConnectTimeout(TrioclustError, TimeoutError):
    """No connection could be made before the timeout (an ``OSError`` too).

    Attributes:
        address: the address that was tried.
        last_error: the last underlying failure, if any attempt completed.
    """

    def __init__(self, address: str, timeout: float, last_error: BaseException | None) -> None:
        reason = _describe(last_error) if last_error is not None else "no attempt completed"
        super().__init__(
            f"Timed out trying to connect to {address} after {timeout:g} s: {reason}. "
            f"Is the scheduler running at that address?"
        )
        self.address = address
        self.last_error = last_error


def _describe(exc: BaseException) -> str:
    """The root cause of a connect failure, as ``[Errno 111] Connection refused``."""
    cause = exc.__cause__
    if isinstance(exc, OSError) and exc.errno is None and isinstance(cause, OSError):
        return _describe(cause)
    if isinstance(cause, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in cause.exceptions)
    if isinstance(exc, OSError) and exc.errno is not None:
        # the same words under every event loop (asyncio says "Connect call failed")
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


class TransportHandshakeError(TrioclustError, ConnectionError):
    """The peer answered, but the transport's handshake failed; retrying will not help."""


class TLSConnectionError(TransportHandshakeError):
    """A TLS connection was refused by either side.

    The message names the peer and says what failed: this side presented no
    certificate, the certificate is not signed by the CA the other side
    trusts, the peer does not speak TLS at all, or the two sides share no
    TLS version.
    """


class WebSocketHandshakeError(TransportHandshakeError):
    """The websocket upgrade failed: the server answered with an HTTP error
    (a wrong path, say), or with something that is not HTTP."""


class EncryptionRequiredError(TrioclustError, ValueError):
    """An unencrypted address (``tcp://``, ``ws://``) was asked for while the
    :class:`~trioclust.Security` in use says ``require_encryption=True``.

    Asking for it is a mistake in the address, hence a ``ValueError``. The
    message names the address and the encrypted one to use instead.
    """


# ------------------------------------------------------------ comms
class CommClosedError(TrioclustError, ConnectionError):
    """The connection is closed, or closed while this call used it.

    The message names the peer's address and why the connection ended
    ("the peer closed the connection", "this side closed the connection",
    "connection lost: [Errno 104] Connection reset by peer", ...).
    """


class HandshakeTimeout(ProtocolError, TimeoutError):
    """The peer did not complete the handshake in time (``comm.timeouts.handshake``).

    Both a :class:`ProtocolError` (whatever is at the other end does not speak
    trioclust's protocol promptly) and a ``TimeoutError``.
    """


class RemoteError(TrioclustError):
    """A request's handler raised on the peer.

    The original exception arrives pickled and is *not* unpickled here
    (unpickling runs code); the client layer does that where it trusts the
    peer, and re-raises the original type.

    Attributes:
        text: ``"TypeName: message"`` of the remote exception.
        exception: the pickled exception (a
            :class:`~trioclust.protocol.Serialized`), or ``None`` when the
            peer sent none.
        traceback: the remote traceback as text, when the peer sent one.
    """

    def __init__(self, text: str, exception: Any = None, traceback: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.exception = exception
        self.traceback = traceback


# ------------------------------------------------------------ the scheduler's decisions
class KilledWorker(TrioclustError):
    """A task was running on workers that died ``allowed_failures + 1`` times.

    The task itself probably kills its worker (a segfault, running out of
    memory, ``os._exit``). Look at the workers' logs; raise
    ``allowed_failures`` in the config only if the deaths were unrelated.
    """

    def __init__(
        self, key: Hashable, last_worker: str, allowed_failures: int, reason: str = ""
    ) -> None:
        super().__init__(key, last_worker, allowed_failures, reason)
        self.key = key
        self.last_worker = last_worker
        self.allowed_failures = allowed_failures
        #: what the scheduler knew of the last death (e.g. the worker's memory), or ""
        self.reason = reason

    def __str__(self) -> str:
        why = f"; {self.reason}" if self.reason else ""
        return (
            f"Task {self.key!r} was running on {self.allowed_failures + 1} workers that died "
            f"(the last one {self.last_worker}{why}); it probably kills its worker. Check the "
            f"worker logs, or raise 'scheduler.allowed-failures' if the deaths were unrelated."
        )


class LostData(TrioclustError):
    """Scattered data was lost with the workers that held it and cannot be recomputed."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return (
            f"The scattered data {self.key!r} was lost with the worker(s) that held it; "
            f"it has no task to recompute it from. Scatter it again."
        )


class ActorLostError(TrioclustError, ConnectionError):
    """The worker holding an actor cannot be reached (it died or left): the
    actor is lost with it, as in Dask; make a new one."""


# ------------------------------------------------------------ the client
class FutureCancelledError(TrioclustError, concurrent.futures.CancelledError):
    """The future was cancelled (``future.cancel()``, ``client.cancel``, or the client closed).

    A subclass of :class:`concurrent.futures.CancelledError` (an ``Exception``,
    so it never looks like the event loop cancelling a task).
    """

    def __init__(self, key: Hashable, reason: str = "") -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"Future {self.key!r} was cancelled{why}"


class SchedulerLostError(TrioclustError, ConnectionError):
    """The client's connection to its scheduler broke; its pending futures fail with this."""


# ------------------------------------------------------------ the nanny
class WorkerStartError(TrioclustError, RuntimeError):
    """The nanny's first worker process did not start.

    It exited, or did not report its address within ``nanny.start-timeout``
    seconds. The message names the scheduler and quotes the process's last
    lines of output, which usually say what went wrong.
    """


class ClusterStartError(TrioclustError, RuntimeError):
    """A cluster manager could not start its scheduler or a worker job.

    The message names the host (or job) and the cause, and quotes the last
    lines the remote side or the batch system wrote (``Permission denied``,
    ``python3: not found``, a SLURM pending reason).
    """


class NannyClosedError(TrioclustError, RuntimeError):
    """The nanny ended (closed, or its worker stopped for good) while a caller waited on it."""


class InvalidTransition(TrioclustError, RuntimeError):
    """A state machine was asked to move a key along a path its table lacks.

    Raised only under validation (``scheduler.validate`` / ``worker.validate``):
    it is a bug in trioclust, and the message carries what is needed to find it.

    Attributes:
        key: The key.
        start: Its state when the recommendation was followed.
        finish: The state recommended.
        stimulus_id: The stimulus being handled.
        story: The key's recorded transitions, oldest first.
    """

    def __init__(self, key: Hashable, start: str, finish: str, stimulus_id: str, story: Sequence[tuple[Any, ...]]) -> None:
        self.key = key
        self.start = start
        self.finish = finish
        self.stimulus_id = stimulus_id
        self.story = story
        lines = "".join(f"\n  {entry!r}" for entry in story) or "\n  (none recorded)"
        super().__init__(
            f"No transition {start!r} -> {finish!r} for key {key!r} "
            f"(stimulus {stimulus_id!r}); its story (key, start, finish, stimulus_id, time):"
            f"{lines}"
        )

    def __reduce__(self) -> tuple[type[InvalidTransition], tuple[Hashable, str, str, str, Any]]:
        return (type(self), (self.key, self.start, self.finish, self.stimulus_id, self.story))
