"""Statistical profiling of running tasks: sampled stacks, merged into a tree.

``client.profile(duration=1.0)`` asks every worker to sample, for that long,
the stacks of the threads running its tasks (every ``interval``, 10 ms by
default) and to count each line of code seen, as Dask's statistical profiler
does. The counts form a tree in Dask's shape, rooted at the outermost frame::

    {"identifier": "root", "description": {...}, "count": 120,
     "children": {"<name>;<file>;<line>": {same shape}, ...}}

where ``count`` is how many samples passed through that line (a parent's
count is at least the sum of its children's). The workers' trees are merged
by adding counts. Nothing is sampled unless asked: no thread, no timer
otherwise. The sampler runs in the worker's event loop
(``sys._current_frames()`` reads every thread's frame at once); a sample
costs the loop 40 to 70 microseconds per thread 25 frames deep, and the
tasks the GIL for that long.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Collection
from types import FrameType
from typing import Any

import trio

__all__ = ["create", "merge", "process", "sample"]

# frames of trioclust's own task-running code below the user's function
_SKIP_FILES = ("trioclust/runtime/", "threading.py")


def create() -> dict[str, Any]:
    """An empty tree."""
    return {"identifier": "root", "description": {"filename": "", "name": "", "line_number": 0,
            "line": ""}, "count": 0, "children": {}}


def _description(frame: FrameType) -> dict[str, Any]:
    code = frame.f_code
    return {"filename": code.co_filename, "name": code.co_name, "line_number": frame.f_lineno or 0,
            "line": ""}


def process(frame: FrameType, tree: dict[str, Any]) -> None:
    """Count one sampled stack (its innermost ``frame``) into ``tree``."""
    stack: list[FrameType] = []
    f: FrameType | None = frame
    while f is not None:
        stack.append(f)
        f = f.f_back
    stack.reverse()  # outermost first
    # the thread's own machinery (threading, the pool's loop, run_sync) is
    # the same in every sample: start at the user's code
    while stack and any(part in stack[0].f_code.co_filename for part in _SKIP_FILES):
        stack.pop(0)
    tree["count"] += 1
    node = tree
    for f in stack:
        code = f.f_code
        ident = f"{code.co_name};{code.co_filename};{f.f_lineno}"
        child = node["children"].get(ident)
        if child is None:
            child = node["children"][ident] = {
                "identifier": ident, "description": _description(f), "count": 0, "children": {}
            }
        child["count"] += 1
        node = child


def merge(*trees: dict[str, Any]) -> dict[str, Any]:
    """One tree counting every sample of ``trees``."""
    out = create()
    for tree in trees:
        _add(out, tree)
    return out


def _add(into: dict[str, Any], tree: dict[str, Any]) -> None:
    into["count"] += tree["count"]
    for ident, child in tree["children"].items():
        mine = into["children"].get(ident)
        if mine is None:
            mine = into["children"][ident] = {
                "identifier": ident, "description": dict(child["description"]), "count": 0,
                "children": {},
            }
        _add(mine, child)


async def sample(thread_ids: Collection[int] | None, duration: float, interval: float) -> dict[str, Any]:
    """Sample the stacks of ``thread_ids`` (all but this one if None) for ``duration`` seconds.

    A thread with no frame outside the skipped machinery (an idle pool
    thread, waiting for work) adds nothing.
    """
    tree = create()
    own = threading.get_ident()  # the loop's own thread is never sampled
    with trio.move_on_after(duration):
        while True:
            frames = sys._current_frames()
            for tid, frame in frames.items():
                if tid == own or (thread_ids is not None and tid not in thread_ids):
                    continue
                if _is_idle(frame):
                    continue
                process(frame, tree)
            del frames
            await trio.sleep(interval)
    return tree


def _is_idle(frame: FrameType) -> bool:
    """Whether the innermost user-visible frame is a pool thread waiting for a job."""
    f: FrameType | None = frame
    while f is not None:
        name = f.f_code.co_filename
        if not any(part in name for part in _SKIP_FILES) and not name.endswith("queue.py"):
            return False
        f = f.f_back
    return True
