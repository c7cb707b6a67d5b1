"""What clients do to a worker besides giving it tasks: add worker plugins
(``client.register_plugin``; nanny plugins are passed on to the worker's
nanny), upload files (``client.upload_file``) and restart it
(``client.restart``, or a nanny plugin that asks for it): a mixin of
:class:`~trioclust.runtime.worker.Worker`.

Theory of operation
-------------------
A plugin's ``setup`` runs when it is added (after the teardown of the one of
the same name it replaces), its ``transition`` hook after each pass of the
core, once for each transition of that pass (read back from the core's
transition log), and its ``teardown`` when it is removed or the worker
closes. A hook's error is logged; ``setup``'s is the registering client's.
Uploaded files live in a directory of the worker's own at the front of
``sys.path``, removed from it, and from disk, when the worker closes.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from trioclust.core.story import entries_after
from trioclust.protocol import Serialized
from trioclust.protocol import messages as msgs

if TYPE_CHECKING:
    from trioclust.core.worker_state import WorkerState
    from trioclust.runtime.nanny_plugins import NannyPipe

logger = logging.getLogger("trioclust.worker")


class PluginHosting:
    """The Worker's plugins and uploaded files (a mixin; see the module's notes)."""

    if TYPE_CHECKING:  # the Worker's

        name: str | None
        state: WorkerState
        plugins: dict[str, Any]
        nanny_pipe: NannyPipe | None
        _upload_directory: str | None
        restart_requested: bool
        close_reason: str | None

        def _request_close(self) -> None: ...

    def _on_upload_file(self, msg: msgs.UploadFileWorkerMsg) -> None:
        """``client.upload_file``: keep the file on the import path; import it when asked.

        A ``.py`` file goes into a directory of this worker's own at the front of
        ``sys.path``; a ``.zip`` or ``.egg`` goes there too and is put on the
        path itself. Loading imports the module (the archive's top-level
        modules and packages), reloading one imported before.
        """
        directory = self._upload_directory
        if directory is None:
            directory = self._upload_directory = tempfile.mkdtemp(prefix="trioclust-uploads-")
            sys.path.insert(0, directory)
        name = os.path.basename(msg["filename"])
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(msg["data"])
        modules: list[str] = []
        if name.endswith((".zip", ".egg")):
            if path not in sys.path:
                sys.path.insert(0, path)
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    top, _, rest = member.partition("/")
                    if (rest == "__init__.py" or (not rest and top.endswith(".py"))) and top != "EGG-INFO":
                        modules.append(top.removesuffix(".py"))
        elif name.endswith(".py"):
            modules.append(name.removesuffix(".py"))
        importlib.invalidate_caches()
        if msg["load"]:
            for module in dict.fromkeys(modules):
                if module in sys.modules:
                    importlib.reload(sys.modules[module])
                else:
                    importlib.import_module(module)
        logger.info("Worker %s got the uploaded file %s", self.name, name)

    def _on_restart(self, msg: msgs.RestartWorkerMsg) -> None:
        """``client.restart``: stop; under a nanny the process exits so that a
        fresh worker starts (a worker without one stays closed, as in Dask)."""
        self.restart_requested = True
        self.close_reason = "restarted by client.restart()"
        logger.info("Worker %s restarts (client.restart)", self.name)
        self._request_close()

    def _on_plugin_add(self, msg: msgs.PluginAddMsg) -> Any:
        """``client.register_plugin(WorkerPlugin)``: set it up (tearing down
        the one it replaces); ``setup`` may be async, and its error is the
        registering client's."""
        plugin = msg["plugin"].deserialize() if isinstance(msg["plugin"], Serialized) else msg["plugin"]
        old = self.plugins.pop(msg["name"], None)
        if old is not None and hasattr(old, "teardown"):
            _call_logged(old.teardown, self, f"worker plugin {msg['name']!r} teardown")
        self.plugins[msg["name"]] = plugin
        setup = getattr(plugin, "setup", None)
        return setup(worker=self) if setup is not None else None

    async def _on_nanny_plugin_add(self, msg: msgs.NannyPluginAddMsg) -> dict[str, Any] | None:
        """Pass a ``NannyPlugin`` on to this worker's nanny; ``None`` without one."""
        if self.nanny_pipe is None:
            return None
        answer = await self.nanny_pipe.request(msg["name"], msg["plugin"])
        if answer["restart"] and "id" not in msg:
            # given as this worker registered: nobody waits for an answer
            self._on_restart({"op": "restart"})
        return {"status": answer["error"] or "OK", "restart": answer["restart"]}

    async def _on_plugin_remove(self, msg: msgs.PluginRemoveMsg) -> str | None:
        """``client.unregister_worker_plugin``: tear the plugin down here (or in the nanny)."""
        name = msg["name"]
        if msg["nanny"]:
            if self.nanny_pipe is None:
                return None
            answer = await self.nanny_pipe.request(name, None)
            return str(answer["error"] or "OK")
        plugin = self.plugins.pop(name, None)
        teardown = getattr(plugin, "teardown", None)
        if teardown is not None:
            try:
                result = teardown(worker=self)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
        return "OK"

    def _plugin_transitions(self, mark: Any) -> None:
        for key, start, finish, stimulus_id, _ in entries_after(self.state.transition_log, mark):
            for name, plugin in list(self.plugins.items()):
                hook = getattr(plugin, "transition", None)
                if hook is not None:
                    _call_logged(
                        partial(hook, key, start, finish, stimulus_id=stimulus_id),
                        None, f"worker plugin {name!r} transition",
                    )

    async def _teardown_plugins(self) -> None:
        for name, plugin in list(self.plugins.items()):
            teardown = getattr(plugin, "teardown", None)
            if teardown is None:
                continue
            try:
                result = teardown(worker=self)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("Worker plugin %r failed in teardown", name)
        self.plugins.clear()

    def _remove_uploads(self) -> None:
        directory, self._upload_directory = self._upload_directory, None
        if directory is None:
            return
        sys.path[:] = [p for p in sys.path if not (p == directory or p.startswith(directory + os.sep))]
        shutil.rmtree(directory, ignore_errors=True)


def _call_logged(fn: Callable[..., Any], arg: Any, what: str) -> None:
    """``fn(arg)`` (``fn()`` when ``arg`` is None), logging its error."""
    try:
        fn() if arg is None else fn(arg)
    except Exception:
        logger.exception("%s failed", what)
