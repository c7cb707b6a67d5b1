"""The scheduler's plugins and uploaded files: scheduler plugins and their
hooks, worker and nanny plugins, and ``client.upload_file``.

Theory of operation
-------------------
A scheduler plugin lives in the scheduler (``plugins``): its hooks are called
by ``_plugins_call`` after the core's pass that made the change (the core
knows nothing of plugins); an async hook runs in the scheduler's nursery, and
a hook's error is logged, never raised. Worker plugins, nanny plugins and
uploaded files are sent to every worker now, concurrently, and kept
(``worker_plugins``, ``nanny_plugins``, ``uploads``) for the workers that
register later, which get them ahead of any task (see
runtime/scheduler_workers.py). A nanny plugin that asks for it restarts its
worker.

:class:`PluginHandlers` is a mixin of :class:`~trioclust.runtime.scheduler.Scheduler`;
``_CLIENT_HANDLERS`` in runtime/scheduler.py maps each op to its method.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import trio

from trioclust import config
from trioclust.comm import Link
from trioclust.core.story import entries_after
from trioclust.errors import CommClosedError, RemoteError
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs

if TYPE_CHECKING:
    from trioclust.core.scheduler_state import SchedulerState

logger = logging.getLogger("trioclust.scheduler")


class PluginHandlers:
    """The Scheduler's plugins and uploaded files (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Scheduler's

        state: SchedulerState
        worker_links: dict[str, Link]
        uploads: dict[str, msgs.UploadFileWorkerMsg]
        plugins: dict[str, Any]
        worker_plugins: dict[str, msgs.PluginAddMsg]
        nanny_plugins: dict[str, msgs.NannyPluginAddMsg]
        _nursery: trio.Nursery | None

    # ------------------------------------------------------------- plugins
    # Scheduler plugins' hooks are called from here, after the core's pass
    # that made the change: the core knows nothing of plugins.

    async def _client_register_scheduler_plugin(
        self, client: str, msg: msgs.RegisterSchedulerPluginMsg
    ) -> None:
        name = msg["name"]
        if name in self.plugins and msg["idempotent"]:
            return
        plugin = msg["plugin"].deserialize() if isinstance(msg["plugin"], Serialized) else msg["plugin"]
        start = getattr(plugin, "start", None)
        if start is not None:
            result = start(self)
            if inspect.isawaitable(result):
                await result
        self.plugins[name] = plugin

    async def _client_register_worker_plugin(
        self, client: str, msg: msgs.RegisterWorkerPluginMsg
    ) -> dict[str, str]:
        name = msg["name"]
        add: msgs.PluginAddMsg = {"op": "plugin-add", "plugin": msg["plugin"], "name": name}
        if name in self.worker_plugins and msg["idempotent"]:
            return {}
        self.worker_plugins[name] = add
        replies: dict[str, str] = {}

        async def one(address: str, link: Link) -> None:
            try:
                await link.request("plugin-add", plugin=add["plugin"], name=name)
                replies[address] = "OK"
            except (RemoteError, CommClosedError) as exc:
                replies[address] = str(exc)

        async with trio.open_nursery() as nursery:
            for address, link in list(self.worker_links.items()):
                nursery.start_soon(one, address, link)
        return replies

    async def _client_register_nanny_plugin(
        self, client: str, msg: msgs.RegisterNannyPluginMsg
    ) -> dict[str, str]:
        name = msg["name"]
        add: msgs.NannyPluginAddMsg = {"op": "nanny-plugin-add", "plugin": msg["plugin"], "name": name}
        if name in self.nanny_plugins and msg["idempotent"]:
            return {}
        self.nanny_plugins[name] = add
        replies: dict[str, str] = {}
        restart: list[str] = []

        async def one(address: str, link: Link) -> None:
            try:
                reply = await link.request("nanny-plugin-add", plugin=add["plugin"], name=name)
            except (RemoteError, CommClosedError) as exc:
                replies[address] = str(exc)
                return
            if reply is not None:  # None: this worker runs without a nanny
                replies[address] = reply["status"]
                if reply["restart"]:
                    restart.append(address)

        async with trio.open_nursery() as nursery:
            for address, link in list(self.worker_links.items()):
                nursery.start_soon(one, address, link)
        for address in restart:  # NannyPlugin.restart: a fresh worker process
            to_restart = self.worker_links.get(address)
            if to_restart is not None and not to_restart.closed:
                restart_msg: msgs.RestartWorkerMsg = {"op": "restart"}
                to_restart.send(restart_msg)
        return replies

    async def _client_unregister_worker_plugin(
        self, client: str, msg: msgs.UnregisterPluginMsg
    ) -> dict[str, str]:
        name, nanny = msg["name"], msg["nanny"]
        known: dict[str, Any] = self.nanny_plugins if nanny else self.worker_plugins
        if known.pop(name, None) is None:
            kind = "nanny" if nanny else "worker"
            raise ValueError(
                f"Tried to remove the unknown {kind} plugin {name!r}; registered: {sorted(known)}"
            )
        replies: dict[str, str] = {}

        async def one(address: str, link: Link) -> None:
            try:
                reply = await link.request("plugin-remove", name=name, nanny=nanny)
            except (RemoteError, CommClosedError) as exc:
                replies[address] = str(exc)
                return
            if reply is not None:
                replies[address] = reply

        async with trio.open_nursery() as nursery:
            for address, link in list(self.worker_links.items()):
                nursery.start_soon(one, address, link)
        return replies

    def _plugins_call(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook`` of every scheduler plugin that has it; an async one runs
        in the scheduler's nursery. Errors are logged, never raised."""
        for name, plugin in list(self.plugins.items()):
            fn = getattr(plugin, hook, None)
            if fn is None:
                continue
            try:
                result = fn(*args, **kwargs)
            except Exception:
                logger.exception("Scheduler plugin %r failed in %s", name, hook)
                continue
            if inspect.isawaitable(result) and self._nursery is not None:
                self._nursery.start_soon(_await_logged, result, f"Scheduler plugin {name!r} {hook}")

    def _plugin_transitions(self, mark: Any) -> None:
        """Tell plugins the transitions logged after ``mark`` (the log's last entry before)."""
        for key, start, finish, stimulus_id, _ in entries_after(self.state.transition_log, mark):
            self._plugins_call("transition", key, start, finish, stimulus_id=stimulus_id)

    async def _close_plugins(self) -> None:
        with trio.move_on_after(config.get_float("runtime.close-timeout")) as scope:
            scope.shield = True
            for name, plugin in list(self.plugins.items()):
                close = getattr(plugin, "close", None)
                if close is None:
                    continue
                try:
                    result = close()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("Scheduler plugin %r failed to close", name)

    # ------------------------------------------------------ uploaded files
    async def _client_upload_file(self, client: str, msg: msgs.UploadFileMsg) -> None:
        """Send the file to every worker now, keep it for those that join later;
        raise the first worker's error (a failed import) as itself."""
        upload: msgs.UploadFileWorkerMsg = {
            "op": "upload-file", "filename": msg["filename"], "data": msg["data"], "load": msg["load"],
        }
        self.uploads[msg["filename"]] = upload
        errors: list[RemoteError] = []

        async def one(link: Link) -> None:
            try:
                await link.request(
                    "upload-file", filename=upload["filename"], data=upload["data"], load=upload["load"]
                )
            except RemoteError as exc:
                errors.append(exc)
            except CommClosedError:
                pass  # it left; a worker that joins later gets the file when it registers

        async with trio.open_nursery() as nursery:
            for link in list(self.worker_links.values()):
                nursery.start_soon(one, link)
        if errors:
            error = errors[0]
            try:
                original = error.exception.deserialize() if error.exception is not None else None
            except Exception:  # its class lives in the uploaded file, say
                original = None
            raise original if isinstance(original, Exception) else RuntimeError(error.text)


async def _await_logged(awaitable: Any, what: str) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("%s failed", what)
