"""Dask collections on trioclust: ``compute``, ``persist``, ``get``, and being
dask's default scheduler.

Theory of operation
-------------------
dask builds an expression for what is asked (``FinalizeCompute`` of the
collections for ``compute``), optimizes it on the client, and hands it with
the output keys to a scheduler's ``get``. :func:`submit_graph` is the one
path every entry point takes:

1. materialize the graph (``__dask_graph__()``), a dict of
   ``dask._task_spec`` nodes; legacy tuple tasks are converted once with
   ``convert_legacy_graph``. Values that are trioclust futures stand for
   their keys, already on the cluster;
2. cull it to the keys asked for, and refuse a dependency that is neither in
   the graph nor held by this client as a future (``ValueError``, as dask);
3. order it with ``dask.order`` (a cycle raises dask's ``RuntimeError``):
   the order is both the order the tasks leave in (dependencies first, as
   update-graph chunks require) and their priorities, so the workers run a
   reduction's branches depth first and hold a few chunks each instead of
   every leaf;
4. pickle each node into an ordinary run_spec, ``run_graph_node(node,
   {dependency: TaskRef})``: the worker substitutes the dependencies' values
   as for any task and calls the node. Nothing on the scheduler or worker
   side knows about dask; only unpickling a node imports it.

Graphs are materialized and culled here, on the client: the scheduler's
``core/`` never imports dask, and the client already holds the optimized
expression (dask optimizes client-side), so shipping the materialized tasks
in update-graph chunks costs nothing extra.

A client created with ``set_as_default=True`` (the default) becomes dask's
scheduler (``dask.config`` ``scheduler``) and switches dask.dataframe's
shuffles to the task-based method, which spans hosts; closing it gives the
role back to the previous default client, or restores dask's config when
none is left. dask is imported only when it is installed and used.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from trioclust import task_context
from trioclust.client.futures import Future
from trioclust.protocol.messages import Key
from trioclust.protocol.run_spec import dumps_task, run_graph_node
from trioclust.protocol.task_spec import TaskRef

if TYPE_CHECKING:
    from trioclust.client.client import Client

__all__ = [
    "compute",
    "futures_of",
    "get",
    "persist",
    "set_default_client",
    "submit_graph",
    "unset_default_client",
]


def _dask() -> Any:
    try:
        import dask
    except ImportError:
        raise ImportError(
            "Dask collections need dask: pip install 'trioclust[dask]'"
        ) from None
    return dask


# ------------------------------------------------------------- graph to tasks


def _flatten(keys: Any) -> Iterator[Key]:
    if isinstance(keys, list):
        for k in keys:
            yield from _flatten(k)
    else:
        yield keys


def _materialize(dsk: Any, held: set[Key]) -> tuple[dict[Key, Any], dict[Key, Future]]:
    """The graph as ``{key: GraphNode}``, and the futures found as its values."""
    from dask._task_spec import Alias, GraphNode, Task, convert_legacy_graph

    if hasattr(dsk, "__dask_graph__"):
        dsk = dsk.__dask_graph__()
    graph = dict(dsk)
    futures: dict[Key, Future] = {}
    for key, value in list(graph.items()):
        if isinstance(value, Future):
            futures[value.key] = value
            if value.key == key:
                del graph[key]  # already on the cluster
            else:
                graph[key] = Alias(key, value.key)
    if not all(isinstance(v, GraphNode) for v in graph.values()):
        graph = convert_legacy_graph(graph, all_keys=set(graph) | held | set(futures))
    for key, node in graph.items():
        if isinstance(node, Task) and _holds_future(node):
            graph[key] = _swap_futures(node, futures, set())
    return graph, futures


_WALKED = (list, tuple, dict, set, frozenset)


def _holds_future(node: Any) -> bool:
    """Whether a Task's arguments hold a trioclust future, also inside plain
    containers and nested nodes (dask keeps a duck-typed future there as a
    plain value, not as a dependency)."""
    from dask._task_spec import Task

    stack = [*node.args, *node.kwargs.values()]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            return True
        if isinstance(x, Task):
            stack.extend(x.args)
            stack.extend(x.kwargs.values())
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, _WALKED):
            stack.extend(x)
    return False


def _swap_futures(x: Any, futures: dict[Key, Future], keys: set[Key]) -> Any:
    """``x`` with each future inside made a dependency on its key (a dask
    ``TaskRef``); the keys go to ``keys``, the futures to ``futures``."""
    from dask._task_spec import Task, parse_input
    from dask._task_spec import TaskRef as DaskRef

    if isinstance(x, Future):
        futures[x.key] = x
        keys.add(x.key)
        return DaskRef(x.key)
    if isinstance(x, Task):
        if not _holds_future(x):
            return x
        inner: set[Key] = set()
        new = copy.copy(x)
        new.args = tuple(_swap_futures(a, futures, inner) for a in x.args)
        new.kwargs = {k: _swap_futures(v, futures, inner) for k, v in x.kwargs.items()}
        new._dependencies = frozenset(x.dependencies | inner)
        new._token = None
        keys |= inner
        return new
    if isinstance(x, dict):
        return parse_input({k: _swap_futures(v, futures, keys) for k, v in x.items()})
    if isinstance(x, _WALKED):
        return parse_input(type(x)(_swap_futures(v, futures, keys) for v in x))
    return x


def _ordered(graph: dict[Key, Any], keys: list[Key], held: set[Key]) -> list[Key]:
    """Cull ``graph`` to ``keys`` (in place), check that every dependency
    exists, and return its keys in ``dask.order``'s order."""
    from dask._task_spec import cull
    from dask.order import order

    wanted = [k for k in keys if k in graph]
    if len(wanted) != len(graph):
        culled = cull(graph, wanted)
        graph.clear()
        graph.update(culled)
    missing: dict[Key, set[Key]] = {}
    for key, node in graph.items():
        for dep in node.dependencies:
            if dep not in graph and dep not in held:
                missing.setdefault(dep, set()).add(key)
    for key in keys:
        if key not in graph and key not in held:
            missing.setdefault(key, set())
    if missing:
        dep, dependents = next(iter(missing.items()))
        raise ValueError(
            f"Missing dependency {dep!r} for dependents {dependents or {dep}}: it is neither "
            f"in the graph nor a future this client holds"
        )
    priorities: dict[Key, int] = order(graph)
    return sorted(graph, key=priorities.__getitem__)


def submit_graph(
    client: Client, dsk: Any, keys: list[Key], priority: int = 0, options: Any = None
) -> dict[Key, Future]:
    """Send a dask graph (an expression, a dict of nodes, or a legacy dict) to
    the scheduler; the futures of ``keys``.

    Args:
        client: the client to compute with.
        dsk: what has ``__dask_graph__()``, or a mapping of keys to tasks.
        keys: the keys wanted (a flat list).
        priority: higher runs first among waiting tasks, as in ``submit``.
        options: placement options for every task (``workers=``, ``resources=``,
            ``retries=``: protocol/messages.py's TaskOptions), or None.

    Raises:
        ValueError: a task depends on a key that is neither in the graph nor
            a future this client holds.
        RuntimeError: the graph has a cycle (raised by ``dask.order``).
        TypeError: a task cannot be pickled.
    """
    _dask()
    core = client._core
    held = core.held_keys()
    graph, futures = _materialize(dsk, held)
    held |= set(futures)
    order = _ordered(graph, keys, held)
    base = core.next_priorities(priority, len(order))
    tasks = []
    for i, key in enumerate(order):
        node = graph[key]
        task: tuple[Any, ...] = (key, node, sorted(node.dependencies, key=str), base + i)
        tasks.append((*task, options) if options else task)
    wanted = list(dict.fromkeys(keys))
    # the nodes are pickled chunk by chunk, each chunk sent once pickled
    out = dict(zip(wanted, core.submit_tasks(tasks, wanted, encode=_encode_node), strict=True))
    del futures  # held until the graph was queued
    return out


def _encode_node(key: Key, node: Any) -> Any:
    """A graph node's run_spec (see run_graph_node)."""
    refs = {dep: TaskRef(dep) for dep in node.dependencies}
    try:
        return dumps_task(run_graph_node, (node, refs), {})
    except Exception as exc:
        raise TypeError(f"Could not serialize the task {key!r} ({node!r}): {exc}") from exc


# ------------------------------------------------------- compute, persist, get


def compute(
    client: Client, collections: Any, *, sync: bool, optimize_graph: bool, priority: int,
    traverse: bool = True, options: Any = None,
) -> Any:
    """``Client.compute``: a future per collection (see there)."""
    _dask()
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr, is_dask_collection

    finalize: Any = FinalizeCompute
    singleton = is_dask_collection(collections) or not isinstance(collections, list | tuple | set)
    items = [collections] if singleton else list(collections)
    colls = [item for item in items if is_dask_collection(item)]
    by_index: dict[int, Future] = {}
    if colls:
        expr = finalize(collections_to_expr(colls, optimize_graph)).optimize()
        per_collection = [list(_flatten(k)) for k in expr.__dask_keys__()]
        futures = submit_graph(client, expr, [ks[0] for ks in per_collection], priority, options)
        indices = [i for i, item in enumerate(items) if is_dask_collection(item)]
        for i, ks in zip(indices, per_collection, strict=True):
            by_index[i] = futures[ks[0]]
    results = [by_index.get(i, item) for i, item in enumerate(items)]
    if sync:
        results = client.gather(results)
        if client.asynchronous:
            return _first(results) if singleton else results
    return results[0] if singleton else results


async def _first(awaitable: Any) -> Any:
    return (await awaitable)[0]


def persist(
    client: Client, collections: Any, *, optimize_graph: bool, priority: int, options: Any = None
) -> Any:
    """``Client.persist``: the collections, backed by futures (see there)."""
    _dask()
    from dask._expr import CompositeExpr, _ExprSequence
    from dask.base import _rebuild_composite_collection, collections_to_expr, is_dask_collection

    singleton = is_dask_collection(collections)
    colls = [collections] if singleton else list(collections)
    if not colls:
        return colls
    expr: Any = collections_to_expr(colls, optimize_graph)
    before = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
    composite = any(isinstance(e, CompositeExpr) for e in before)
    expr = expr.optimize()
    after = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
    if not composite or len(after) != len(colls):
        after = [None] * len(colls)
    keys: list[Key] = []
    rebuilds: list[tuple[Any, Any, Any]] = []
    for coll, cexpr, ckeys in zip(colls, after, expr.__dask_keys__(), strict=True):
        flat = list(_flatten(ckeys))
        keys.extend(flat)
        if isinstance(cexpr, CompositeExpr):
            rebuilds.append((coll, cexpr, None))
        else:
            rebuild, state = coll.__dask_postpersist__()
            rebuilds.append((rebuild, flat, state))
    futures = submit_graph(client, expr, keys, priority, options)
    out = []
    for rebuild, flat, state in rebuilds:
        if state is None:
            out.append(_rebuild_composite_collection(rebuild, flat, futures, cull_to_child_keys=True))
        else:
            out.append(rebuild({k: futures[k] for k in flat}, *state))
    return out[0] if singleton else out


def _pack(keys: Any, futures: dict[Key, Future]) -> Any:
    if isinstance(keys, list):
        return [_pack(k, futures) for k in keys]
    return futures[keys]


def get(client: Client, dsk: Any, keys: Any, *, sync: bool, priority: int = 0) -> Any:
    """``Client.get``: results nested like ``keys`` (see there)."""
    futures = submit_graph(client, dsk, list(_flatten(keys)), priority)
    packed = _pack(keys, futures)
    if not sync:
        return packed
    # In a thread task (``x.compute()`` inside a task, as the Futures page's
    # "Submit Tasks from Tasks" shows) the thread leaves the worker's pool
    # while the graph runs, so the graph's tasks can use its place, and
    # takes a place again before the task goes on, as in Dask.
    context = task_context.current_task()
    seceded = context is not None and context.in_thread and context.secede()
    try:
        return client.gather(packed)
    finally:
        if seceded:
            assert context is not None
            context.rejoin()


def futures_of(obj: Any) -> list[Future]:
    """The trioclust futures inside ``obj``: a future, a collection whose
    graph holds futures (a persisted one), or lists, tuples, sets and dicts
    of these.

    Args:
        obj: what to look in.

    Returns:
        The futures, each once, in the order found.
    """
    found: dict[int, Future] = {}
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            found.setdefault(id(x), x)
        elif isinstance(x, list | tuple | set | frozenset):
            stack.extend(reversed(list(x)))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif hasattr(x, "__dask_graph__") and not isinstance(x, type):
            graph = x.__dask_graph__()
            if graph is not None:
                stack.extend(v for v in graph.values() if isinstance(v, Future))
    return list(found.values())


# ---------------------------------------------------------- default scheduler

_lock = threading.Lock()
_defaults: list[Client] = []
_restore: Any = None  # the dask.config.set() that the first default made


def set_default_client(client: Client) -> None:
    """Make ``client`` dask's scheduler (no-op without dask installed)."""
    try:
        import dask.config
    except ImportError:
        return
    global _restore
    with _lock:
        if client in _defaults:
            _defaults.remove(client)
        _defaults.append(client)
        if _restore is None:
            _restore = dask.config.set(
                {"scheduler": client, "dataframe.shuffle.method": "tasks"}
            )
        else:
            dask.config.set(scheduler=client)


def unset_default_client(client: Client) -> None:
    """``client`` closes: the previous default takes over, or dask's own config."""
    global _restore
    with _lock:
        if client not in _defaults:
            return
        import dask.config

        _defaults.remove(client)
        if _defaults:
            if dask.config.get("scheduler", None) is client:
                dask.config.set(scheduler=_defaults[-1])
        elif _restore is not None:
            _restore.__exit__(None, None, None)
            _restore = None


def default_clients() -> Iterable[Client]:
    """The clients registered as default, oldest first."""
    with _lock:
        return list(_defaults)
