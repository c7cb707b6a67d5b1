"""Every message the servers and the client send or handle is declared in
protocol/messages.py, and every declared one is sent and handled; the
messages a real cluster exchanges have exactly their declared fields."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trioclust import Client, Scheduler, Worker
from trioclust.comm import Link
from trioclust.protocol import messages

PACKAGE = Path(__file__).resolve().parent.parent / "trioclust"
DECLARED = {op for channel in messages.CHANNELS.values() for op in channel}


def _sources() -> Iterator[tuple[Path, ast.AST]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        # testing/ holds the transport conformance suite, which sends ops of its own
        if path.name != "messages.py" and path.parent.name != "testing":
            yield path, ast.parse(path.read_text())


def _op_literals(tree: ast.AST) -> Iterator[str]:
    """Ops of messages built here: ``{"op": "x", ...}`` and ``request("x", ...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant) and key.value == "op"
                    and isinstance(value, ast.Constant) and isinstance(value.value, str)
                ):
                    yield value.value
        elif isinstance(node, ast.Call):
            args = node.args
            if isinstance(node.func, ast.Attribute) and node.func.attr == "request":
                first = args[0] if args else None  # link.request("op", ...)
            elif args and isinstance(args[0], ast.Attribute) and args[0].attr == "request":
                first = args[1] if len(args) > 1 else None  # call(core.request, "op", ...)
            else:
                continue
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value


def _handled_ops(tree: ast.AST) -> Iterator[str]:
    """Ops handled here: the keys of handler tables (``Link(comm, {...})`` and
    ``_*_HANDLERS = {...}``), and ops compared with a message's ``"op"``."""
    for node in ast.walk(tree):
        table: ast.expr | None = None
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Link" and len(node.args) > 1:
            table = node.args[1]
        elif isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id.endswith("_HANDLERS") for t in targets):
                table = node.value
        elif isinstance(node, ast.Compare) and _reads_op(node.left):
            for right in node.comparators:
                if isinstance(right, ast.Constant) and isinstance(right.value, str):
                    yield right.value
        if isinstance(table, ast.Dict):
            for key in table.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield key.value


def _reads_op(node: ast.expr) -> bool:
    """``msg.get("op")`` or ``msg["op"]``."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get":
        first = node.args[0] if node.args else None
        return isinstance(first, ast.Constant) and first.value == "op"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "op"
    return False


def test_every_op_sent_or_handled_is_declared_and_the_reverse() -> None:
    sent: dict[str, set[str]] = {}
    handled: dict[str, set[str]] = {}
    for path, tree in _sources():
        where = str(path.relative_to(PACKAGE))
        for op in _op_literals(tree):
            sent.setdefault(op, set()).add(where)
        for op in _handled_ops(tree):
            handled.setdefault(op, set()).add(where)
    undeclared = {op: sorted(w) for op, w in {**sent, **handled}.items() if op not in DECLARED}
    assert undeclared == {}, "ops used but not declared in protocol/messages.py"
    assert sorted(DECLARED - set(sent)) == [], "declared ops that nothing sends"
    assert sorted(DECLARED - set(handled)) == [], "declared ops that nothing handles"


def test_each_channel_declares_an_op_once_with_its_literal() -> None:
    for name, channel in messages.CHANNELS.items():
        for op, message_type in channel.items():
            assert messages.op_of(message_type) == op, name
            assert "op" in message_type.__required_keys__


# ------------------------------------------------- what a real cluster sends


def _fields(message_type: Any) -> tuple[set[str], set[str]]:
    """(required, allowed) field names of a declared message, less a request's ``id``
    (the link's, not the message's)."""
    required = set(message_type.__required_keys__) - {"id"}
    return required, required | set(message_type.__optional_keys__)


def _check(message: dict[str, Any], seen: set[str]) -> None:
    op = message["op"]
    candidates = [c[op] for c in messages.CHANNELS.values() if op in c]
    assert candidates, f"undeclared op {op!r}: {message}"
    fields = set(message) - {"id"}
    for message_type in candidates:
        required, allowed = _fields(message_type)
        if required <= fields <= allowed:
            seen.add(op)
            return
    raise AssertionError(
        f"{op!r} sent with fields {sorted(fields)}, declared as "
        f"{[sorted(_fields(t)[1]) for t in candidates]}"
    )


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every message links send while the test runs."""
    sent: list[dict[str, Any]] = []
    send, request = Link.send, Link.request

    def recording_send(self: Link, msg: Any, **kwargs: Any) -> None:
        sent.append(dict(msg))
        send(self, msg, **kwargs)

    async def recording_request(self: Link, op: str, **kwargs: Any) -> Any:
        sent.append({"op": op, **kwargs})
        return await request(self, op, **kwargs)

    monkeypatch.setattr(Link, "send", recording_send)
    monkeypatch.setattr(Link, "request", recording_request)
    return sent


def _inc(x: int) -> int:
    return x + 1


def _fail(x: int) -> int:
    raise ValueError(x)


@pytest.mark.anyio
async def test_a_working_cluster_sends_only_declared_messages(recorded: list[dict[str, Any]]) -> None:
    async with Scheduler() as s, Worker(s.address, nthreads=2) as a, Worker(s.address) as b:
        async with Client(s.address, asynchronous=True) as client:
            x, y = await client.scatter([1, 2])
            futures = client.map(_inc, range(20))
            total = client.submit(sum, futures)
            assert await total == sum(range(1, 21))
            assert await client.submit(_inc, x) == 2
            assert await client.gather([y]) == [2]
            with pytest.raises(ValueError):
                await client.submit(_fail, 1)
            slow = client.submit(_inc, 5, key="slow-one")
            await client.cancel([slow])
            del futures, total
            assert set(await client.run(lambda: 1)) == {a.address, b.address}
            await client.run_on_scheduler(lambda: 1)
            assert (await client.scheduler_info())["workers"]
            await client.wait_for_workers(2)
            kept = client.submit(_inc, 41)
            assert await kept == 42
            await client.retire_workers([a.address])
            assert await kept == 42  # moved before a left
    seen: set[str] = set()
    for message in recorded:
        _check(message, seen)
    assert {"compute-task", "task-finished", "keys-in-memory", "acquire-replicas", "close"} <= seen
