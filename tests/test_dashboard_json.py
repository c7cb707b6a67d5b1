"""/json/status and /json/task-stream are built as text straight from the
task stream's rows; they must say exactly what the dict builders say."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trioclust.core import events as ev
from trioclust.core import instructions as ins
from trioclust.core.keys import Key
from trioclust.core.scheduler_state import SchedulerState
from trioclust.dashboard import TaskStream, snapshot


class _Scheduler:
    id = "Scheduler-1"
    address = "tcp://127.0.0.1:1"
    client_links: dict[str, Any] = {}

    def __init__(self) -> None:
        self.state = SchedulerState()
        self.worker_metrics: dict[str, dict[str, Any]] = {}


KEYS: list[Key] = [
    "inc-3f2a9c0d11aa",
    ("x-1f3e5d7a9b0c", 0, 1),
    'quote"and\\back-1',
    "ünïcode-☃-12",
    "tab\there\nline",
    7,
    2.5,
]


def _stream() -> TaskStream:
    stream = TaskStream(maxlen=5, clock=lambda: 1_700_000_000.25)
    stream.observe([ev.AddWorker(address="w-é", nthreads=2, name="w", memory_limit=0, stimulus_id="s")], [])
    for i, key in enumerate(KEYS):
        stream.observe([], [ins.ComputeTask(worker="w-é", key=key, run_spec=None, priority=0, stimulus_id="s")])
        if i == 3:
            stream.finished(key, "w-é", "erred", None, None)  # estimated times
        elif i < 6:
            stream.finished(key, "w-é", "memory", 1_700_000_000.0 + i / 3, 1_700_000_000.5 + i, 123, None, 8)
    return stream


def _without_now(text: str) -> dict[str, Any]:
    doc = json.loads(text)
    doc.pop("now", None)
    return doc


@pytest.mark.parametrize("since", [0, 1, 3, 5, 6, 99])
@pytest.mark.parametrize("n", [None, 0, 2, 100])
def test_task_stream_json_is_task_stream_dumped(since: int, n: int | None) -> None:
    stream = _stream()
    text = snapshot.task_stream_json(stream, n, since)
    assert json.loads(text) == json.loads(json.dumps(snapshot.task_stream(stream, n, since)))
    assert [r.id for r in stream.recent(n, since=since)] == [row[0] for row in stream.rows(n, since=since)]


def test_rows_keep_only_the_newest_and_know_the_ids() -> None:
    stream = _stream()
    assert stream.last_id == 6
    assert [row[0] for row in stream.rows()] == [2, 3, 4, 5, 6]  # maxlen 5
    assert [row[0] for row in stream.rows(since=4)] == [5, 6]
    assert [row[0] for row in stream.rows(2, since=0)] == [5, 6]
    assert stream.rows(since=6) == []


@pytest.mark.parametrize("since", [0, 4])
def test_status_json_is_status_dumped(since: int) -> None:
    scheduler, stream = _Scheduler(), _stream()
    text = snapshot.status_json(scheduler, stream, stream_length=3, since=since)
    expected = json.loads(json.dumps(snapshot.status(scheduler, stream, stream_length=3, since=since)))
    expected.pop("now")
    assert _without_now(text) == expected
    assert "\\u" not in text  # not ascii-escaped, as starlette's JSONResponse


def test_status_json_shares_the_parts_it_is_given() -> None:
    scheduler, stream = _Scheduler(), _stream()
    parts = snapshot.dumps(snapshot.status_parts(scheduler))
    first = snapshot.status_json(scheduler, stream, stream_length=10, since=0, parts=parts)
    second = snapshot.status_json(scheduler, stream, stream_length=10, since=5, parts=parts)
    assert json.loads(first)["now"] == json.loads(second)["now"]
    assert [r["id"] for r in json.loads(second)["task_stream"]["finished"]] == [6]
