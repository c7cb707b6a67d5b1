"""The placement and scheduling options of ``submit`` and ``map``, checked and
packed for the wire.

``workers=``, ``allow_other_workers=``, ``resources=`` and ``retries=`` become
a task's :class:`~trioclust.protocol.messages.TaskOptions`, the fifth item of
its update-graph entry, present only when one of them is used (the scheduler
reads them into core/scheduler_placement.py's restrictions). ``fifo_timeout=``
is checked and changes nothing: see :func:`check_fifo_timeout`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from trioclust.protocol import messages as msgs

__all__ = ["check_fifo_timeout", "task_options"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h|d)?\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def task_options(
    workers: Any, allow_other_workers: bool, resources: Mapping[str, float] | None, retries: int | None
) -> msgs.TaskOptions | None:
    """The wire options of a task, or None when it uses none.

    Raises:
        TypeError, ValueError: an option that is not what Dask takes, with
            what was expected.
    """
    options: msgs.TaskOptions = {}
    if workers is not None:
        names = [workers] if isinstance(workers, str) else list(workers)
        if not all(isinstance(w, str) for w in names):
            raise TypeError(
                f"workers= takes a worker's address, name or host, or a list of them; got {workers!r}"
            )
        if names:
            options["workers"] = names
            if allow_other_workers:
                options["allow_other_workers"] = True
    if resources:
        if not isinstance(resources, Mapping):
            raise TypeError(f"resources= takes a dict such as {{'GPU': 1}}; got {resources!r}")
        amounts: dict[str, float] = {}
        for name, amount in resources.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
                raise ValueError(f"resources={resources!r}: {name!r} needs a number >= 0")
            amounts[str(name)] = float(amount)
        options["resources"] = amounts
    if retries:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries= takes a whole number >= 0; got {retries!r}")
        options["retries"] = retries
    return options or None


def check_fifo_timeout(fifo_timeout: Any) -> float:
    """Read ``fifo_timeout`` as Dask does (seconds, or ``"100ms"``, ``"60s"``)
    and return it in seconds.

    In Dask, submissions less than ``fifo_timeout`` apart may share a
    priority generation, so their tasks can run in either order, and only
    submissions further apart are guaranteed to run first-in first-out.
    trioclust numbers every submission (``ClientCore.next_priority``): equal
    user priorities always run in submission order, which keeps Dask's
    guarantee for every value, so the value changes nothing here. It is
    checked all the same: a value Dask would refuse is refused.

    Raises:
        ValueError: neither a number of seconds >= 0 nor a duration string.
    """
    if fifo_timeout is None:
        return 0.0
    if isinstance(fifo_timeout, int | float) and not isinstance(fifo_timeout, bool):
        seconds = float(fifo_timeout)
    elif isinstance(fifo_timeout, str) and (match := _DURATION.match(fifo_timeout)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(
            f"fifo_timeout takes seconds or a duration such as '100ms' or '60s'; got {fifo_timeout!r}"
        )
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"fifo_timeout cannot be negative; got {fifo_timeout!r}")
    return seconds
