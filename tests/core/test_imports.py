"""The core must stay sans-IO: no async library, no sockets, no threads."""

from __future__ import annotations

import ast
from pathlib import Path

import trioclust.core

CORE = Path(trioclust.core.__file__).parent
FORBIDDEN = {
    "trio",
    "anyio",
    "sniffio",
    "msgpack",
    "cloudpickle",
    "socket",
    "threading",
    "asyncio",
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_imports_no_io_or_async_library() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 5
    offenders = {
        f"{path.relative_to(CORE)}: {name}"
        for path in files
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offenders, f"core/ must import the stdlib only: {sorted(offenders)}"


def test_core_imports_nothing_of_trioclust_outside_core_but_its_errors() -> None:
    # trioclust.errors imports the stdlib only (tests/test_layers.py says so)
    for path in sorted(CORE.rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] == "trioclust":
                assert name == "trioclust.errors" or name.startswith("trioclust.core"), (
                    f"{path.name} imports {name}"
                )
