"""The messages a client builds for the scheduler: stimulus ids, the
update-graph messages of a submission, and release-keys.

A graph of more than ``GRAPH_CHUNK`` tasks goes as several update-graph
messages, in order; :func:`_graph_messages` decides what each wants so that
the scheduler keeps the tasks a later chunk depends on, and
:func:`_bridge_keys` names those holds, released after the last chunk.
:class:`~trioclust.client.core.ClientCore` sends what is built here
(``submit_tasks``, ``cancel``, the releases of dropped futures). Pure
functions: no I/O, safe from any thread.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from trioclust.protocol import messages as msgs
from trioclust.protocol.messages import Key

#: Tasks per update-graph message: a large ``map`` goes as several messages,
#: each its own wire batch (see ``Link.send``'s ``weight``), so the scheduler
#: starts on the first while the rest are still being encoded, and never holds
#: the whole decoded graph at once (its transient objects would otherwise
#: fragment the memory that the tasks it keeps are allocated among).
GRAPH_CHUNK = 1000


#: Numbers this process's stimulus ids (see :func:`stimulus_id`).
_STIMULI = itertools.count()
_PROCESS = uuid.uuid4().hex[:8]


def stimulus_id(op: str) -> str:
    """A stimulus id of its own for one message a client sends (``"update-graph-<process>-<n>"``).

    Safe from any thread (``next`` on a count is atomic)."""
    return f"{op}-{_PROCESS}-{next(_STIMULI)}"


#: One task of an update-graph: ``(key, run_spec, dependencies, priority)``,
#: and a fifth item, its :class:`~trioclust.protocol.messages.TaskOptions`,
#: only when it has placement options.
GraphTask = tuple[Any, ...]


def _graph_messages(tasks: list[GraphTask], wanted: list[Key]) -> list[msgs.UpdateGraphMsg]:
    """The update-graph messages for ``tasks``, in order, at most ``GRAPH_CHUNK`` tasks each.

    A task depends only on keys the scheduler knows or on tasks before it, so
    the chunks go in order; each names the wanted keys among its tasks, and
    the last also those that are not tasks of this graph. A chunk also wants
    its tasks that a later chunk depends on: the scheduler forgets a new task
    that nothing wants or depends on, and the dependent is not there yet (the
    sender releases those holds after the last chunk, see ``_bridge_keys``).
    """
    if len(tasks) <= GRAPH_CHUNK:
        return [
            {
                "op": "update-graph", "tasks": [list(t) for t in tasks], "wanted": wanted,
                "stimulus_id": stimulus_id("update-graph"),
            }
        ]
    wanted_set = set(wanted)
    bridges: set[Key] = set()  # tasks that a task of a later chunk depends on
    if any(t[2] for t in tasks):
        chunk_of = {t[0]: i // GRAPH_CHUNK for i, t in enumerate(tasks)}
        for i, t in enumerate(tasks):
            here = i // GRAPH_CHUNK
            for dep in t[2]:
                if chunk_of.get(dep, here) < here:
                    bridges.add(dep)
    messages: list[msgs.UpdateGraphMsg] = []
    for start in range(0, len(tasks), GRAPH_CHUNK):
        chunk = [list(t) for t in tasks[start : start + GRAPH_CHUNK]]
        keys = [t[0] for t in chunk if t[0] in wanted_set or t[0] in bridges]
        messages.append(
            {
                "op": "update-graph", "tasks": chunk, "wanted": keys,
                "stimulus_id": stimulus_id("update-graph"),
            }
        )
    in_graph = {t[0] for t in tasks}
    messages[-1]["wanted"] += [key for key in wanted if key not in in_graph]
    return messages


def _bridge_keys(messages: list[msgs.UpdateGraphMsg], keep: set[Key]) -> list[Key]:
    """The keys that the chunks before the last want only to bridge to a later
    chunk (not in ``keep``): released again once the last chunk is sent."""
    return [key for msg in messages[:-1] for key in msg["wanted"] if key not in keep]


def _release_message(keys: list[Key]) -> msgs.ReleaseKeysMsg:
    return {"op": "release-keys", "keys": keys, "stimulus_id": stimulus_id("release-keys")}

