"""The layering rules of DESIGN.md, and the docs that list the public API."""

from __future__ import annotations

import ast
import concurrent.futures
import sys
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
