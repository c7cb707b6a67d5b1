"""The UCX loop: the thread that runs ucxx for every ``ucx://`` connection of a process.

ucxx speaks asyncio; :class:`UCXLoop` runs it on an asyncio loop of its own,
on a daemon thread (``trioclust-ucx``), with one ucxx application context:
one UCX worker, progressed by ucxx's progress thread, its completions
delivered by ucxx's notifier thread. Callers in any trio or asyncio loop
submit coroutines to it and await the result with :func:`wait_for`, woken in
their own loop through its token.

It starts on first use and lives until the process exits; see
:mod:`trioclust.transport.ucx` for why it is never stopped earlier.

Everything ucxx-specific that runs on the loop lives here too:
:class:`Endpoint`, which drives one UCX endpoint through ucxx's lower-level
calls, and :func:`create_endpoint`, which connects one. They use some of
ucxx's internals (``ucxx._lib_async``: ``ApplicationContext``,
``exchange_peer_info``, an ``Endpoint``'s ``_ep`` and ``_tags``), as written
for ucxx 0.52. No ucxx exception
leaves this module with its traceback (:func:`forget`): a ucxx request keeps
the exception it failed with, and frames in a traceback would keep the
endpoint, and so the UCX worker and its sockets, alive from C++, where no
garbage collection reaches.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

__all__ = [
    "CLOSE_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "INSTALL_HINT",
    "CallSoon",
    "Endpoint",
    "UCXLoop",
    "call_soon_here",
    "create_endpoint",
    "forget",
    "start_ucx",
    "ucx_available",
    "wait_for",
    "wake",
]

T = TypeVar("T")

#: seconds for ucxx's peer-info exchange on connect and accept, and for the hello
HANDSHAKE_TIMEOUT = 2.0
#: seconds a close waits for sends in flight before it aborts the endpoint
CLOSE_TIMEOUT = 2.0
#: seconds the UCX loop may take to start (UCX's context creation) or stop
_LOOP_TIMEOUT = 60.0
_THREAD_NAME = "trioclust-ucx"
INSTALL_HINT = (
    "the ucx:// transport needs the ucxx package: pip install 'trioclust[ucx]' "
    "(on a machine without a GPU, UCX_TLS=tcp,self,sm keeps UCX off CUDA transports)"
)


def ucx_available() -> bool:
    """Whether ``ucxx`` is installed (checked without importing it)."""
    return importlib.util.find_spec("ucxx") is not None


# --------------------------------------------------------- crossing threads

CallSoon = Callable[[Callable[[], object]], object]


def call_soon_here() -> CallSoon:
    """A thread-safe, non-blocking "run this soon" into the running trio or asyncio loop."""
    native = anyio.lowlevel.current_token().native_token
    call_soon: CallSoon | None = getattr(native, "run_sync_soon", None)  # a TrioToken
    if call_soon is None:
        call_soon = native.call_soon_threadsafe  # type: ignore[attr-defined]  # an asyncio loop
    return call_soon


def wake(call_soon: CallSoon, event: anyio.Event) -> None:
    try:
        call_soon(event.set)
    except RuntimeError:  # that loop has ended (trio.RunFinishedError, or a closed asyncio loop)
        pass


async def wait_for(future: concurrent.futures.Future[T], *, cancel: bool) -> T:
    """The result of ``future`` (done on the UCX loop), awaited in the caller's loop.

    Args:
        future: from :meth:`UCXLoop.submit`.
        cancel: whether to cancel the UCX-side task when the caller is
            cancelled; without it that task runs on and only the wait ends.
    """
    done = anyio.Event()
    call_soon = call_soon_here()
    future.add_done_callback(lambda _: wake(call_soon, done))
    try:
        await done.wait()
    except BaseException:
        if cancel:
            future.cancel()
        raise
    return future.result()


# ------------------------------------------------------------- the UCX loop


class UCXLoop:
    """The asyncio loop thread that owns the process's UCX worker, from first use to exit."""

    _lock = threading.Lock()
    _instance: UCXLoop | None = None

    def __init__(self) -> None:
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop = asyncio.new_event_loop()
        self.ctx: Any = None  # ucxx's ApplicationContext, only touched on the UCX loop
        # A daemon thread, so is ucxx's notifier thread it starts: neither holds
        # up the interpreter's exit, and _stop_at_exit closes both.
        self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
        self._thread.start()

    @classmethod
    async def get(cls) -> UCXLoop:
        """The process's UCX loop, started on the first call.

        Raises:
            ModuleNotFoundError: ``ucxx`` is not installed.
            OSError: UCX could not be initialized (the next call tries again).
        """
        if not ucx_available():
            raise ModuleNotFoundError(INSTALL_HINT, name="ucxx")
        with cls._lock:
            runtime = cls._instance
            if runtime is None or (runtime.ready.done() and runtime.ready.exception()):
                runtime = cls._instance = UCXLoop()
        with anyio.fail_after(_LOOP_TIMEOUT):
            await wait_for(runtime.ready, cancel=False)
        return runtime

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the UCX loop (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float) -> None:
        """Stop the loop, close ucxx's threads, wait for them up to ``timeout`` seconds."""
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            return
        self._thread.join(timeout)

    # ---------------------------------------------------- on the loop thread
    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                if not isinstance(exc, ImportError):
                    exc = OSError(f"UCX could not be initialized: {forget(exc)}")
                self.ready.set_exception(exc)
            else:
                self.ready.set_result(None)
                loop.run_forever()
            self._stop(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _start(self) -> None:
        os.environ.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")  # ucxx sets one UCX ignores
        importlib.import_module("ucxx")
        lib_async = importlib.import_module("ucxx._lib_async")
        # A context of our own (not ucxx's global one), bound to this loop:
        # thread progress, and Python futures so a pending receive does not spin.
        self.ctx = lib_async.ApplicationContext(
            progress_mode="thread",
            enable_python_future=True,
            connect_timeout=HANDSHAKE_TIMEOUT,
        )

    def _stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Finish the loop's tasks, then stop ucxx's notifier and progress threads."""
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            ctx.worker.stop_request_notifier_thread()  # wakes the notifier at once
            ctx.stop_notifier_thread()
            ctx.worker.stop_progress_thread()


def _stop_at_exit() -> None:
    """Stop the UCX loop when the interpreter exits, before UCX's threads could call into it."""
    runtime = UCXLoop._instance
    if runtime is not None:
        runtime.stop(CLOSE_TIMEOUT + 3)


atexit.register(_stop_at_exit)


async def start_ucx() -> None:
    """Start the process's UCX runtime now, rather than on the first connect or listen.

    It takes UCX about half a second to start; the runtime then serves every
    ``ucx://`` connection of the process until it exits.

    Raises:
        ModuleNotFoundError: ``ucxx`` is not installed.
        OSError: UCX could not be initialized.
    """
    await UCXLoop.get()


def forget(exc: BaseException) -> str:
    """``exc``'s message, its traceback (and its chain's) dropped.

    A ucxx request keeps the exception it failed with, and a traceback's
    frames keep the endpoint (and through it its listener, or the UCX
    worker): held that way from C++, out of the garbage collector's reach,
    they would keep UCX's sockets open for good. So no ucxx exception is
    kept or passed on, only its message.
    """
    message = str(exc) or type(exc).__name__
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return message


# --------------------------------------------------------------- endpoints


class Endpoint:
    """One UCX endpoint, driven through ucxx's lower-level calls (on the UCX loop only).

    ucxx's ``Endpoint.send`` and ``recv`` do the same, but they swallow some
    failures whose tracebacks a ucxx request then keeps (see :func:`forget`).
    Here every failure is a ``ConnectionResetError`` carrying UCX's message
    and nothing else. Receiving follows ucxx: once the endpoint has closed,
    messages that arrived before are still taken from the worker.
    """

    def __init__(self, wrapper: Any, worker: Any) -> None:
        types = importlib.import_module("ucxx.types")
        self._array = importlib.import_module("ucxx._lib.arr").Array
        self._canceled = importlib.import_module("ucxx._lib.libucxx").UCXCanceled
        self._wrapper = wrapper  # ucxx's Endpoint: it owns the UCX endpoint
        self._raw = wrapper._ep
        self._worker = worker
        self._send_tag = types.Tag(wrapper._tags["msg_send"])
        self._recv_tag = types.Tag(wrapper._tags["msg_recv"])
        self._mask = types.TagMaskFull

    def post(self, *messages: Any) -> list[Any]:
        """Start sending each of ``messages`` (buffers kept alive by the caller) as a tag message.

        Returns:
            The ucxx requests, for :meth:`wait`.

        Raises:
            ConnectionResetError: the endpoint has failed.
        """
        failure = None
        try:
            self._raw.raise_on_error()
            return [self._raw.tag_send(self._array(m), self._send_tag) for m in messages]
        except Exception as exc:
            failure = forget(exc)
        raise ConnectionResetError(failure)  # out here, where no ucxx exception is its context

    async def wait(self, requests: list[Any]) -> None:
        """Wait until ``requests`` (from :meth:`post`) complete.

        Raises:
            ConnectionResetError: one failed.
        """
        failure = None
        try:
            for request in requests:
                await request.wait()
        except Exception as exc:
            failure = forget(exc)
        if failure is not None:
            raise ConnectionResetError(failure)

    async def recv(self, buffer: bytearray) -> None:
        """Receive the next tag message into ``buffer`` (which may be longer)."""
        failure = None
        try:
            await self._recv(buffer)
        except Exception as exc:
            failure = forget(exc)
        if failure is not None:
            raise ConnectionResetError(failure)

    async def _recv(self, buffer: bytearray) -> None:
        array = self._array(buffer)
        try:
            self._raw.raise_on_error()
            open_ = bool(self._raw.alive)
        except Exception as exc:
            forget(exc)
            open_ = False
        if open_:
            request = self._raw.tag_recv(array, self._recv_tag, self._mask)
            try:
                await request.wait()
                return
            except self._canceled as exc:  # the endpoint closed while we waited
                forget(exc)
        probe = self._worker.tag_probe(self._recv_tag, remove=True)
        if not probe.matched:
            raise ConnectionResetError("the connection was closed")
        await self._worker.tag_recv_with_handle(array, probe).wait()

    def close(self) -> None:
        """Close the UCX endpoint now (pending operations on it are cancelled)."""
        try:
            self._wrapper.abort(period=10**9, max_attempts=1)
        except Exception as exc:
            forget(exc)


async def create_endpoint(ctx: Any, ip: str, port: int) -> Endpoint | str:
    """``ctx.create_endpoint(ip, port)``, but refused at once, and leaving nothing behind.

    ucxx's own waits out its exchange timeout when the peer refuses, and the
    UCX endpoint it drops then keeps the UCX worker alive. Here the endpoint's
    close callback (UCX reports a refusal within milliseconds) ends the
    exchange, and a failed endpoint is closed before it is dropped. The
    exchange is ucxx's own (``exchange_peer_info``), so the listening side
    can be ucxx's listener.

    Returns:
        The endpoint; or, when UCX could not connect or the exchange failed,
        UCX's reason.
    """
    lib = importlib.import_module("ucxx._lib.libucxx")
    lib_async = importlib.import_module("ucxx._lib_async")
    peer_info = importlib.import_module("ucxx._lib_async.exchange_peer_info")
    utils = importlib.import_module("ucxx._lib_async.utils")
    loop = asyncio.get_running_loop()
    ucx_ep = lib.UCXEndpoint.create(ctx.worker, ip, port, True)
    lost = asyncio.Event()
    failure = ""
    try:
        try:
            ucx_ep.set_close_callback(loop.call_soon_threadsafe, (lost.set,))
        except RuntimeError:  # already closed: refused before we could listen for it
            lost.set()
        msg_tag = utils.hash64bits("msg_tag", os.urandom(16), ucx_ep.handle)
        exchange = loop.create_task(
            peer_info.exchange_peer_info(
                endpoint=ucx_ep, msg_tag=msg_tag, listener=False, connect_timeout=HANDSHAKE_TIMEOUT
            )
        )
        watch = loop.create_task(lost.wait())
        try:
            await asyncio.wait([exchange, watch], return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not exchange.done():
                exchange.cancel()
                await asyncio.gather(exchange, return_exceptions=True)
        error = None if exchange.cancelled() else exchange.exception()
        if error is not None:
            failure = forget(error)
        if lost.is_set() or exchange.cancelled():
            failure = "the peer refused or could not be reached"
        elif error is None:
            info = exchange.result()
            ucx_ep.remove_close_callback()
            tags = {"msg_send": info["msg_tag"], "msg_recv": msg_tag}
            return Endpoint(lib_async.Endpoint(endpoint=ucx_ep, ctx=ctx, tags=tags), ctx.worker)
    except BaseException:
        _close_raw(ucx_ep)
        raise
    _close_raw(ucx_ep)
    del exchange
    return failure


def _close_raw(ucx_ep: Any) -> None:
    """Close a ucxx ``UCXEndpoint`` that no ``Endpoint`` wraps yet."""
    for close in (lambda: ucx_ep.close_blocking(period=10**9, max_attempts=1),
                  ucx_ep.remove_close_callback):
        try:
            close()
        except Exception as exc:  # already closed, or no callback
            forget(exc)
