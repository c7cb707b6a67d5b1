"""The synchronous client's event loop: trio, run by anyio on a thread we own.

Why not ``anyio.from_thread.start_blocking_portal``: its thread is joined at
interpreter exit *before* ``atexit`` handlers run, so a script that forgot
``client.close()`` would hang on exit. Ours is a daemon thread, and an
``atexit`` handler closes every client still open, gracefully, before the
interpreter tears daemon threads down.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

_open: weakref.WeakSet[Any] = weakref.WeakSet()


class LoopThread:
    """A thread running an event loop with a :class:`BlockingPortal` into it."""

    def __init__(self, *, name: str, backend: str = "trio") -> None:
        self._name = name
        self._backend = backend
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None, "the loop thread is not running"
        return self._portal

    @property
    def ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    def start(self) -> BlockingPortal:
        """Start the thread and return the portal once the loop runs."""

        async def main() -> None:
            async with BlockingPortal() as portal:
                self._portal = portal
                self._ready.set()
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(main, backend=self._backend)
            except BaseException as exc:  # reported to start()'s caller
                self._error = exc
            finally:
                self._ready.set()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None or self._portal is None:
            raise RuntimeError(f"the client's event loop did not start: {self._error!r}")
        return self._portal

    def stop(self) -> None:
        """Stop the loop (after the tasks it runs end) and join the thread."""
        if self._portal is not None and self._thread is not None and self._thread.is_alive():
            try:
                self._portal.call(self._portal.stop)
            except RuntimeError:
                pass  # already stopping
        if self._thread is not None:
            self._thread.join()
        self._portal = None


def register_open(client: Any) -> None:
    """Remember a synchronous client so interpreter exit can close it."""
    _open.add(client)


def unregister_open(client: Any) -> None:
    _open.discard(client)


@atexit.register
def _close_open_clients() -> None:
    for client in list(_open):
        try:
            client.close()
        except Exception:  # the interpreter is exiting: nothing useful to raise to
            pass
