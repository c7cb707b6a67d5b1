"""Nanny plugins: how a ``NannyPlugin`` reaches the nanny process, and back.

Theory of operation
-------------------
A nanny has no connection to the scheduler; its worker does. So the
scheduler hands a nanny plugin to each worker (``nanny-plugin-add``, at
``register_plugin`` and to every worker that registers later), and a worker
that runs under a nanny passes it on over its control pipes
(:mod:`trioclust.runtime.process_control`): one JSON line on its stdout,
``{"nanny_plugin": {"id", "name", "plugin"}}`` (``plugin`` is the pickle,
base64; ``null`` removes the plugin ``name``), answered by one line on its
stdin, ``{"nanny_plugin_done": {"id", "error", "restart"}}``.

The nanny keeps its plugins across worker processes. A plugin it already
holds under that name, pickled identically, is not set up again (each new
worker process passes on every registered plugin); another one under that
name is torn down first. ``setup`` and ``teardown`` get the ``Nanny`` and may
be ``async``; the nanny tears every plugin down when it closes. A plugin with
``restart = True`` that was just set up asks for a fresh worker process: the
scheduler restarts the worker once it has answered the client (a worker that
gets the plugin as it registers restarts itself).
"""

from __future__ import annotations

import base64
import inspect
import itertools
import logging
import pickle
from collections.abc import Callable
from typing import Any

import trio

from trioclust.protocol import Serialized

__all__ = ["NannyPipe", "NannyPlugins"]

logger = logging.getLogger("trioclust.nanny")


def _encode(plugin: object) -> str | None:
    """The plugin (a ``Serialized`` pickle) as base64 text for a JSON line."""
    if plugin is None:
        return None
    return base64.b64encode(pickle.dumps(plugin, protocol=5)).decode("ascii")


class NannyPipe:
    """The worker's end: sends plugins to its nanny and waits for each answer.

    Args:
        send: writes one JSON object as a line on the control channel (stdout).
    """

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._send = send
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}

    async def request(self, name: str, plugin: object) -> dict[str, Any]:
        """Set up (or, with ``plugin`` None, remove) the nanny's plugin ``name``.

        Returns:
            ``{"error": text or None, "restart": bool}``.
        """
        rid = next(self._ids)
        done, answer = trio.Event(), list[dict[str, Any]]()
        self._waiting[rid] = (done, answer)
        try:
            self._send({"nanny_plugin": {"id": rid, "name": name, "plugin": _encode(plugin)}})
            await done.wait()
        finally:
            del self._waiting[rid]
        return answer[0]

    def deliver(self, message: dict[str, Any]) -> None:
        """A line the nanny wrote on stdin (the answer to one request)."""
        done = message.get("nanny_plugin_done")
        if not isinstance(done, dict):
            logger.warning("Ignoring an unknown message from the nanny: %r", message)
            return
        waiting = self._waiting.get(done.get("id", -1))
        if waiting is not None:
            waiting[1].append({"error": done.get("error"), "restart": bool(done.get("restart"))})
            waiting[0].set()


async def _call(fn: Any, nanny: Any) -> None:
    result = fn(nanny=nanny)
    if inspect.isawaitable(result):
        await result


class NannyPlugins:
    """The nanny's end: its plugins by name, set up and torn down with it.

    Args:
        nanny: the ``Nanny`` the hooks get.
    """

    def __init__(self, nanny: Any) -> None:
        self._nanny = nanny
        #: plugins by name
        self.plugins: dict[str, Any] = {}
        self._pickles: dict[str, bytes] = {}

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one ``nanny_plugin`` request; the answer line's object."""
        rid, name, text = request.get("id"), str(request.get("name")), request.get("plugin")
        error: str | None = None
        restart = False
        try:
            if text is None:
                await self.remove(name)
            else:
                data = base64.b64decode(text)
                if self._pickles.get(name) != data:
                    await self.remove(name)
                    plugin = pickle.loads(data)
                    if isinstance(plugin, Serialized):
                        plugin = plugin.deserialize()
                    setup = getattr(plugin, "setup", None)
                    if setup is not None:
                        await _call(setup, self._nanny)
                    self.plugins[name], self._pickles[name] = plugin, data
                    restart = bool(getattr(plugin, "restart", False))
        except Exception as exc:
            logger.exception("Nanny plugin %r failed", name)
            error = f"{type(exc).__name__}: {exc}"
        return {"nanny_plugin_done": {"id": rid, "error": error, "restart": restart}}

    async def remove(self, name: str) -> None:
        """Tear down and forget the plugin ``name``, if there is one."""
        plugin = self.plugins.pop(name, None)
        self._pickles.pop(name, None)
        teardown = getattr(plugin, "teardown", None)
        if teardown is not None:
            await _call(teardown, self._nanny)

    async def teardown_all(self) -> None:
        """The nanny closes: tear every plugin down, logging their errors."""
        for name in list(self.plugins):
            try:
                await self.remove(name)
            except Exception:
                logger.exception("Nanny plugin %r failed in teardown", name)
