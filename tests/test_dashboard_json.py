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
from trioclust.core.scheduler_tasks import TASK_STATES
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


def _timed_stream(runs: list[tuple[str, str, int, float, float, str]]) -> TaskStream:
    """A stream fed ``(key, worker, thread, start, stop, status)`` runs, in order."""
    stream = TaskStream(maxlen=100, clock=lambda: 0.0)
    for worker in {run[1] for run in runs}:
        stream.observe([ev.AddWorker(address=worker, nthreads=2, name=worker, memory_limit=0, stimulus_id="s")], [])
    for key, worker, thread, start, stop, status in runs:
        stream.observe([], [ins.ComputeTask(worker=worker, key=key, run_spec=None, priority=0, stimulus_id="s")])
        stream.finished(key, worker, status, start, stop, thread)
    return stream


def test_spans_merge_runs_in_a_row_on_one_thread() -> None:
    stream = _timed_stream([
        ("inc-aaaaaaaa01", "w1", 1, 10.000, 10.001, "memory"),
        ("inc-aaaaaaaa02", "w1", 1, 10.0015, 10.002, "memory"),  # 0.5 ms later: joins
        ("inc-aaaaaaaa03", "w1", 2, 10.0005, 10.003, "memory"),  # another thread: its own span
        ("inc-aaaaaaaa04", "w2", 1, 10.002, 10.004, "memory"),  # another worker: its own span
        ("inc-aaaaaaaa05", "w1", 1, 10.0021, 10.005, "erred"),  # another outcome: a new span
        ("add-aaaaaaaa06", "w1", 1, 10.005, 10.006, "memory"),  # another prefix: a new span
        ("add-aaaaaaaa07", "w1", 1, 10.100, 10.200, "memory"),  # 94 ms later: a new span
    ])
    spans = snapshot.spans(stream, resolution=0.001)
    assert [(s["worker"], s["thread"], s["prefix"], s["status"], s["start"], s["stop"], s["count"])
            for s in spans] == [
        ("w1", 1, "inc", "memory", 10.000, 10.002, 2),
        ("w1", 2, "inc", "memory", 10.0005, 10.003, 1),
        ("w2", 1, "inc", "memory", 10.002, 10.004, 1),
        ("w1", 1, "inc", "erred", 10.0021, 10.005, 1),
        ("w1", 1, "add", "memory", 10.005, 10.006, 1),
        ("w1", 1, "add", "memory", 10.100, 10.200, 1),
    ]
    # a coarser resolution (a wider window on the page) merges the last two
    assert [s["count"] for s in snapshot.spans(stream, resolution=0.1)] == [2, 1, 1, 1, 2]
    assert [s["count"] for s in snapshot.spans(stream, since=5, resolution=0.1)] == [2]
    assert [s["prefix"] for s in snapshot.spans(stream, resolution=0.1, limit=2)] == ["inc", "add"]
    assert snapshot.spans(stream, resolution=0.1, limit=0) == []
    # every run is counted once, in one span
    assert sum(s["count"] for s in snapshot.spans(stream, resolution=0.001)) == 7


def test_status_json_with_a_resolution_sends_spans_and_the_newest_runs() -> None:
    runs = [(f"inc-aaaaaaaa{i:02}", "w1", 1, 10 + i * 0.001, 10.0005 + i * 0.001, "memory") for i in range(30)]
    scheduler, stream = _Scheduler(), _timed_stream(runs)
    doc = json.loads(snapshot.status_json(scheduler, stream, stream_length=1000, since=0, resolution=0.001))
    task_stream = doc["task_stream"]
    assert "finished" not in task_stream
    assert [(s["prefix"], s["start"], s["stop"], s["count"]) for s in task_stream["spans"]] == [
        ("inc", 10.0, 10.0295, 30)
    ]
    assert [r["key"] for r in task_stream["recent"]] == [r[0] for r in runs[-snapshot.RECENT_RUNS:]]
    assert task_stream["last_id"] == 30
    newer = json.loads(snapshot.status_json(scheduler, stream, stream_length=1000, since=30, resolution=0.001))
    assert (newer["task_stream"]["spans"], newer["task_stream"]["recent"]) == ([], [])


def test_the_prefix_memo_says_what_key_prefix_says_and_stays_bounded() -> None:
    memo = snapshot.PrefixMemo()
    for key in KEYS:
        assert memo(key) == snapshot.key_prefix(key)
        assert memo(key) == snapshot.key_prefix(key)  # remembered
    assert len(memo) == len(KEYS)
    memo.trim(held=0)  # 7 keys: within 2 * 0 + 1024
    assert len(memo) == len(KEYS)
    for i in range(1100):
        memo(f"x-{i}")
    memo.trim(held=10)
    assert len(memo) == 0
    scheduler = _Scheduler()
    assert snapshot.progress(scheduler, prefixes=memo) == snapshot.progress(scheduler)


def _progress_task_by_task(tasks: dict[Key, Any]) -> list[dict[str, Any]]:
    """What progress() said when it walked the tasks one by one in Python."""
    groups: dict[str, dict[str, Any]] = {}
    newest: dict[str, int] = {}
    for ts in tasks.values():
        prefix = snapshot.key_prefix(ts.key)
        group = groups.setdefault(prefix, {"prefix": prefix, "total": 0, **dict.fromkeys(TASK_STATES, 0)})
        group["total"] += 1
        group[ts.state] += 1
        newest[prefix] = max(newest.get(prefix, 0), ts.seq)

    def order(prefix: str) -> tuple[bool, int]:
        g = groups[prefix]
        return (g["memory"] + g["erred"] + g["released"] == g["total"], -newest[prefix])

    return [groups[p] for p in sorted(groups, key=order)]


def test_progress_counts_each_prefix_and_orders_unfinished_then_newest() -> None:
    import random
    from types import SimpleNamespace

    rng = random.Random(3)
    scheduler = _Scheduler()
    prefixes = ["inc", "add", ("x-1f3e5d7a9b0c", 0), "sum-aggregate", 7]
    for seq in range(1, 3001):  # created in order, as the scheduler's dict holds them
        base = rng.choice(prefixes)
        key: Key = (f"{base[0]}-{seq:x}abcdef0", seq) if isinstance(base, tuple) else (
            f"{base}-{seq}" if isinstance(base, str) else base + seq)
        scheduler.state.tasks[key] = SimpleNamespace(key=key, state=rng.choice(TASK_STATES), seq=seq)  # type: ignore[assignment]
    memo = snapshot.PrefixMemo()
    expected = _progress_task_by_task(scheduler.state.tasks)
    assert snapshot.progress(scheduler) == expected
    assert snapshot.progress(scheduler, prefixes=memo) == expected
    assert snapshot.progress(scheduler, 2, prefixes=memo) == expected[:2]  # remembered now
    assert sum(g["total"] for g in expected) == 3000
