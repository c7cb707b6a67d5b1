"""Reading a worker's resources: ``{"GPU": 2}`` or ``"GPU=2,MEM=10e9"``.

A worker (and the nanny and the CLI that start one) takes its abstract
resources as a mapping or as the command line's string; both become one
``{name: float}`` mapping, the form the scheduler and the worker's state
machine account with (docs/scheduling.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_resources", "parse_resources"]


def parse_resources(resources: Mapping[str, float] | str | None) -> dict[str, float]:
    """``{"GPU": 2.0}`` from a mapping or from ``"GPU=2,MEM=10e9"`` (the CLI's
    ``--resources``); raises ``ValueError`` naming what it could not read."""
    if not resources:
        return {}
    pairs: list[tuple[str, Any]] = []
    if isinstance(resources, str):
        for item in resources.replace(" ", ",").split(","):
            if not item:
                continue
            name, sep, text = item.partition("=")
            if not sep or not name:
                raise ValueError(
                    f"resources must look like 'GPU=2,MEM=10e9'; could not read {item!r} in {resources!r}"
                )
            pairs.append((name, text))
    else:
        pairs = [(str(k), v) for k, v in resources.items()]
    out: dict[str, float] = {}
    for name, amount in pairs:
        try:
            out[name] = float(amount)
        except (TypeError, ValueError):
            raise ValueError(f"resource {name!r} needs a number, got {amount!r}") from None
        if out[name] < 0:
            raise ValueError(f"resource {name!r} cannot be negative, got {amount!r}")
    return out


def format_resources(resources: Mapping[str, float]) -> str:
    """The command line's form of ``resources``: ``"GPU=2.0,MEM=10000000000.0"``."""
    return ",".join(f"{name}={amount!r}" for name, amount in resources.items())
