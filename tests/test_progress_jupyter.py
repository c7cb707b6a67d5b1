"""progress() under a real Jupyter kernel: the bars are ipywidgets, sent to
the front end as comm messages (Dask's ``progress`` in a notebook, see
docs/source/diagnosing-performance.rst, "Progress bar").

Starts an IPython kernel with jupyter_client, runs progress() there on a
small computation, and reads the kernel's IOPub messages: a widget model is
opened per bar and its value reaches the number of tasks. Skipped, with the
reason, where ipykernel, jupyter_client or ipywidgets is not installed (they
are not in the test extra).
"""

from __future__ import annotations

import asyncio
import queue
import textwrap
import time
from typing import Any

import pytest

jupyter_client = pytest.importorskip("jupyter_client", reason="needs jupyter_client (pip install jupyter_client)")
pytest.importorskip("ipykernel", reason="needs ipykernel (pip install ipykernel)")
pytest.importorskip("ipywidgets", reason="needs ipywidgets (pip install ipywidgets)")

from jupyter_client.manager import KernelManager  # noqa: E402

CODE = textwrap.dedent(
    """
    from trioclust import Client, LocalCluster, progress

    def inc(x):
        return x + 1

    def double(x):
        return 2 * x

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    client = Client(cluster)
    futures = client.map(inc, range(12)) + client.map(double, range(5))
    bars = progress(futures)
    client.gather(futures)
    print("bars:", sorted(bars))
    client.close()
    cluster.close()
    """
)


def _messages(kc: Any, msg_id: str, deadline: float) -> list[dict[str, Any]]:
    """The IOPub messages of one execution, up to the kernel going idle."""
    out: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        out.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out
    raise AssertionError(f"the kernel did not finish in time; saw {[m['msg_type'] for m in out]}")


def test_progress_sends_widgets_from_a_jupyter_kernel() -> None:
    km = KernelManager(kernel_name="python3")  # ipykernel of this interpreter
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        msg_id = kc.execute(CODE)
        messages = _messages(kc, msg_id, time.monotonic() + 120)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        km.context.term()
        # jupyter_client's blocking calls run on an asyncio loop it makes and
        # sets as this thread's loop, and never closes
        loop = asyncio.get_event_loop_policy().get_event_loop()
        asyncio.set_event_loop(None)
        loop.close()

    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert not errors, errors
    printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "bars: ['double', 'inc']" in printed

    opened = {
        m["content"]["comm_id"]: m["content"]["data"]["state"]
        for m in messages
        if m["msg_type"] == "comm_open" and m["content"].get("target_name") == "jupyter.widget"
    }
    progress_models = {cid for cid, state in opened.items() if state.get("_model_name") == "FloatProgressModel"}
    assert len(progress_models) == 2  # one bar per prefix
    maxima = sorted(opened[cid]["max"] for cid in progress_models)
    assert maxima == [5, 12]
    values: dict[str, float] = {cid: opened[cid].get("value", 0) for cid in progress_models}
    for m in messages:
        if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] in progress_models:
            state = m["content"]["data"].get("state", {})
            if "value" in state:
                values[m["content"]["comm_id"]] = state["value"]
    assert sorted(values.values()) == [5, 12]  # every bar full
