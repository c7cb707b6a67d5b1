"""The layering rules of DESIGN.md, and the docs that list the public API."""

from __future__ import annotations

import ast
import concurrent.futures
import sys
from collections.abc import Iterator
from pathlib import Path

import trioclust
from trioclust import config, errors

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "trioclust"


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_client_never_imports_trio() -> None:
    for path in (PACKAGE / "client").rglob("*.py"):
        assert "trio" not in _imported_modules(path), f"{path} imports trio"


def test_comm_and_transport_are_backend_neutral() -> None:
    for folder in ("comm", "transport", "protocol"):
        for path in (PACKAGE / folder).rglob("*.py"):
            assert "trio" not in _imported_modules(path), f"{path} imports trio"


def test_errors_module_imports_the_stdlib_only() -> None:
    # every layer imports it, the sans-IO core included
    for name in _imported_modules(PACKAGE / "errors.py"):
        assert name == "__future__" or name in sys.stdlib_module_names, f"errors.py imports {name}"


def _exception_classes() -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    ]


def test_every_error_is_exported_and_a_trioclust_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 16
    for cls in classes:
        assert issubclass(cls, errors.TrioclustError), f"{cls.__name__} is no TrioclustError"
        assert cls.__name__ in errors.__all__, f"{cls.__name__} is missing from errors.__all__"
        assert cls.__name__ in trioclust.__all__, f"{cls.__name__} is not in trioclust.__all__"
        assert getattr(trioclust, cls.__name__) is cls


def test_errors_keep_the_builtin_a_caller_catches() -> None:
    assert issubclass(errors.CommClosedError, ConnectionError)
    assert issubclass(errors.SchedulerLostError, ConnectionError)
    assert issubclass(errors.TLSConnectionError, ConnectionError)
    assert issubclass(errors.WebSocketHandshakeError, ConnectionError)
    assert issubclass(errors.ConnectTimeout, TimeoutError)
    assert issubclass(errors.HandshakeTimeout, TimeoutError)
    assert issubclass(errors.HandshakeTimeout, errors.ProtocolError)
    assert issubclass(errors.EncryptionRequiredError, ValueError)
    assert issubclass(errors.WorkerStartError, RuntimeError)
    assert issubclass(errors.NannyClosedError, RuntimeError)
    assert issubclass(errors.FutureCancelledError, concurrent.futures.CancelledError)
    assert str(errors.FutureCancelledError("x", "closed")) == "Future 'x' was cancelled: closed"
    assert str(errors.CommClosedError("tcp://h:1: gone")) == "tcp://h:1: gone"


def test_no_other_module_defines_an_exception() -> None:
    # a class whose base is one of trioclust.errors' or named like an exception
    ours = {cls.__name__ for cls in _exception_classes()}
    suffixes = ("Error", "Exception", "Warning", "Timeout", "Interrupt", "Exit", "Group")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
                if any(base in ours or base.endswith(suffixes) for base in bases):
                    offenders.append(f"{path.relative_to(ROOT)}: class {node.name}")
    assert not offenders, f"exceptions belong in trioclust/errors.py: {offenders}"


def _module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_run(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node`` that can run: module-level and in
    functions alike, leaving out only the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _imports_run(ast.Module(body=[other], type_ignores=[]))
            continue
        yield from _imports_run(child)


def _import_graph() -> dict[str, set[str]]:
    """Which of trioclust's modules each of them imports.

    ``from package import name`` is an edge to the submodule ``package.name``
    when there is one, else to ``package``; relative imports are resolved.
    """
    modules = _module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports_run(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    graph = _import_graph()
    assert graph["trioclust.client.core"] >= {"trioclust.client.futures", "trioclust.config"}
    cycles = _cycles(graph)
    assert not cycles, "import cycles among trioclust's modules: " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_runtime_never_imports_the_layers_above_it() -> None:
    graph = _import_graph()
    above = ("trioclust.client", "trioclust.deploy", "trioclust.cli")
    for name, targets in graph.items():
        if not name.startswith("trioclust.runtime"):
            continue
        for target in targets:
            assert target != "trioclust", f"{name} imports the top-level trioclust package"
            assert not target.startswith(above), f"{name} imports {target}"


def test_the_dashboard_never_imports_the_runtime() -> None:
    # a service of the scheduler, which starts it: an import back would be a cycle
    for name, targets in _import_graph().items():
        if name.startswith("trioclust.dashboard"):
            assert not any(t.startswith("trioclust.runtime") for t in targets), name


def test_every_public_name_is_documented() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    for name in trioclust.__all__:
        assert f"`{name}" in api, f"{name} is missing from docs/api.md"
        obj = getattr(trioclust, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key in config.DEFAULTS:
        assert f"`{key}`" in doc, f"setting {key} is missing from docs/configuration.md"


def test_docs_links_resolve() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text()
        for target in _links(text):
            if "://" in target or target.startswith("#"):
                continue
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name} links to missing {target}"


def _links(text: str) -> list[str]:
    out = []
    start = 0
    while (i := text.find("](", start)) != -1:
        end = text.find(")", i)
        out.append(text[i + 2 : end])
        start = end
    return out
