"""Byte sizes as people write them: ``"4GiB"`` in, ``"3.81 GiB"`` out."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
    "ti": 2**40, "tib": 2**40,
}


def parse_bytes(text: str | int | float) -> int:
    """``"4GiB"``, ``"500 MB"``, ``"2e9"``, ``1024`` -> bytes.

    Raises:
        ValueError: naming the text and showing the accepted forms.
    """
    if isinstance(text, int | float):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"Could not read {text!r} as a size: use bytes (1000000) or a number with a unit "
            f"such as '500MB', '4GiB', '2 GB'"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: int) -> str:
    """``4294967296`` -> ``"4.00 GiB"``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
