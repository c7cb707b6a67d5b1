"""Plugins: user code the cluster calls at its moments (Dask's ``WorkerPlugin``,
``SchedulerPlugin``, ``NannyPlugin``).

Subclass one, override the hooks you need, and ``client.register_plugin(p)``.
The plugin is pickled and sent: a scheduler plugin runs in the scheduler, a
worker plugin in every worker (those that join later too, at registration).
Hooks may be plain or ``async`` methods. The servers call them by name; an
exception in a hook is logged and does not stop the server (``setup`` and
``start``, called at registration, raise to the registering client instead).
The scheduler calls ``transition`` after each pass of its state machine, for
the transitions the pass made, in order; a worker does the same for its own.
A nanny plugin runs in the nanny process of each worker that has one; the
worker passes it on (runtime/nanny_plugins.py). ``unregister_worker_plugin``
tears a worker or nanny plugin down everywhere.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NannyPlugin", "SchedulerPlugin", "WorkerPlugin"]


class WorkerPlugin:
    """Code run in every worker (Dask's ``distributed.WorkerPlugin``).

    Set ``name`` to replace an earlier plugin of that name on registration.
    """

    name: str | None = None

    def setup(self, worker: Any) -> Any:
        """Called when the plugin reaches the worker (registration, or when the
        worker joins later), with the ``Worker``."""

    def teardown(self, worker: Any) -> Any:
        """Called when the worker closes."""

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        """Called after a task on this worker moved from ``start`` to ``finish``
        (``waiting``, ``fetch``, ``flight``, ``ready``, ``executing``,
        ``memory``, ``error``, ``released``...); ``stimulus_id`` is passed as a
        keyword."""


class SchedulerPlugin:
    """Code run in the scheduler (Dask's ``distributed.diagnostics.plugin.SchedulerPlugin``)."""

    name: str | None = None

    async def start(self, scheduler: Any) -> None:
        """Called when the plugin is registered, with the ``Scheduler``."""

    async def close(self) -> None:
        """Called when the scheduler closes."""

    def add_worker(self, scheduler: Any, worker: str) -> Any:
        """A worker registered (its address)."""

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> Any:
        """A worker left (``stimulus_id`` and ``reason`` as keywords)."""

    def add_client(self, scheduler: Any, client: str) -> None:
        """A client connected (its id)."""

    def remove_client(self, scheduler: Any, client: str) -> None:
        """A client disconnected."""

    def update_graph(self, scheduler: Any, *, client: str, keys: set[str], tasks: list[str], **kwargs: Any) -> None:
        """A client sent tasks (``tasks``: their keys) and wants ``keys``
        (``stimulus_id`` as a keyword)."""

    def transition(self, key: str, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """A task moved from ``start`` to ``finish`` (``released``, ``waiting``,
        ``queued``, ``processing``, ``memory``, ``erred``, ``forgotten``);
        ``stimulus_id`` is passed as a keyword."""

    def restart(self, scheduler: Any) -> None:
        """``client.restart`` was called."""


class NannyPlugin:
    """Code run in every nanny (Dask's ``distributed.NannyPlugin``).

    ``restart = True`` asks for the worker process to be restarted once the
    plugin is set up (for plugins that change its environment, such as
    ``nanny.env``). A nanny sets up a plugin once, however many worker
    processes it starts; ``setup`` and ``teardown`` may be ``async``.
    """

    name: str | None = None
    restart = False

    def setup(self, nanny: Any) -> Any:
        """Called when the plugin reaches the nanny, with the ``Nanny``."""

    def teardown(self, nanny: Any) -> Any:
        """Called when the nanny closes."""
