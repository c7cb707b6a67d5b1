"""The layering rules of DESIGN.md, and the docs that list the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import trioclust
from trioclust import config

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
