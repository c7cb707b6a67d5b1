"""The HTML of a performance report: one self-contained file, no script, no network.

Everything is drawn here, in Python, as inline SVG and HTML tables, so the
file opens anywhere (a browser offline, an e-mail attachment, a CI artifact)
and shows the same thing. Each part is a ``<section>`` with a stable id
(``summary``, ``task-stream``, ``progress``, ``workers``, ``slowest``,
``transfers``, ``code``) and an ``<h2>`` heading.
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Iterable, Sequence
from typing import Any

from trioclust.sizes import format_bytes

__all__ = ["render_report", "render_task_stream"]

_MAX_RECTS = 5000  # task stream rectangles drawn, at most (the newest)
_WIDTH = 1000


def _colour(prefix: str) -> str:
    hue = int(hashlib.blake2b(prefix.encode(), digest_size=2).hexdigest(), 16) % 360
    return f"hsl({hue},65%,50%)"


def _compute(record: dict[str, Any]) -> tuple[float, float]:
    for ss in record["startstops"]:
        if ss["action"] == "compute":
            return float(ss["start"]), float(ss["stop"])
    return 0.0, 0.0


def _task_stream_svg(records: Sequence[dict[str, Any]], t0: float, t1: float) -> str:
    shown = records[-_MAX_RECTS:]
    lanes: dict[tuple[str, int], int] = {}
    for record in shown:
        lanes.setdefault((record["worker"], record["thread"]), len(lanes))
    height = max(len(lanes), 1) * 14 + 20
    span = max(t1 - t0, 1e-6)
    parts = [
        f'<svg class="task-stream" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for record in shown:
        lane = lanes[(record["worker"], record["thread"])]
        y = lane * 14
        for ss in record["startstops"]:
            x = (float(ss["start"]) - t0) / span * _WIDTH
            w = max((float(ss["stop"]) - float(ss["start"])) / span * _WIDTH, 0.5)
            colour = "#d33" if record["status"] == "erred" else (
                "#bbb" if ss["action"] == "transfer" else _colour(record["prefix"])
            )
            tip = f'{record["key"]} {ss["action"]} {float(ss["stop"]) - float(ss["start"]):.4f} s on {record["worker"]}'
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="12" fill="{colour}">'
                f"<title>{html.escape(tip)}</title></rect>"
            )
    parts.append(
        f'<text x="0" y="{height - 4}" font-size="11">0 s</text>'
        f'<text x="{_WIDTH - 60}" y="{height - 4}" font-size="11">{span:.2f} s</text></svg>'
    )
    note = (
        f"<p>The newest {len(shown)} of {len(records)} runs.</p>" if len(shown) < len(records) else ""
    )
    legend = " ".join(
        f'<span class="swatch" style="background:{_colour(p)}"></span>{html.escape(p)}'
        for p in dict.fromkeys(r["prefix"] for r in shown)
    )
    return f"{note}<div>{legend}</div>{''.join(parts)}<p>{len(lanes)} threads, one row each.</p>"


def _progress_table(records: Sequence[dict[str, Any]]) -> str:
    groups: dict[str, dict[str, float]] = {}
    for record in records:
        g = groups.setdefault(record["prefix"], {"memory": 0, "erred": 0, "other": 0, "seconds": 0.0})
        status = record["status"]
        g[status if status in ("memory", "erred") else "other"] += 1
        start, stop = _compute(record)
        g["seconds"] += stop - start
    rows = []
    for prefix, g in groups.items():
        total = g["memory"] + g["erred"] + g["other"]
        done = g["memory"] / total * 100 if total else 0
        rows.append(
            f"<tr><td>{html.escape(prefix)}</td><td class='bar'><div style='width:{done:.0f}%;"
            f"background:{_colour(prefix)}'></div></td><td>{int(g['memory'])}</td>"
            f"<td>{int(g['erred'])}</td><td>{int(g['other'])}</td><td>{g['seconds']:.3f}</td></tr>"
        )
    return (
        "<table><tr><th>prefix</th><th>done</th><th>in memory</th><th>erred</th>"
        "<th>other</th><th>compute s</th></tr>" + "".join(rows) + "</table>"
    )


def _line_chart(title: str, series: dict[str, list[tuple[float, float]]], t0: float, t1: float,
                unit: str) -> str:
    height = 160
    span = max(t1 - t0, 1e-6)
    top = max((v for points in series.values() for _, v in points), default=0.0) or 1.0
    parts = [
        f'<svg class="chart" width="{_WIDTH}" height="{height + 20}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="0" y="12" font-size="12">{html.escape(title)} (max {html.escape(unit.format(top))})</text>'
    ]
    for worker, points in series.items():
        coords = " ".join(
            f"{(t - t0) / span * _WIDTH:.1f},{height + 16 - v / top * (height - 10):.1f}" for t, v in points
        )
        parts.append(
            f'<polyline fill="none" stroke="{_colour(worker)}" stroke-width="1.5" points="{coords}">'
            f"<title>{html.escape(worker)}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _workers(history: Iterable[Sequence[Any]], t0: float, t1: float) -> str:
    cpu: dict[str, list[tuple[float, float]]] = {}
    memory: dict[str, list[tuple[float, float]]] = {}
    for when, worker, cpu_percent, rss in history:
        cpu.setdefault(worker, []).append((float(when), float(cpu_percent)))
        memory.setdefault(worker, []).append((float(when), float(rss)))
    if not cpu:
        return "<p>No heartbeats arrived while the report recorded (it was shorter than the workers' heartbeat interval).</p>"
    legend = " ".join(
        f'<span class="swatch" style="background:{_colour(w)}"></span>{html.escape(w)}' for w in cpu
    )
    return (
        f"<div>{legend}</div>"
        + _line_chart("CPU", cpu, t0, t1, "{:.0f} %")
        + _line_chart("Memory", memory, t0, t1, "{:,.0f} bytes")
    )


def _slowest(records: Sequence[dict[str, Any]], n: int = 20) -> str:
    timed = sorted(records, key=lambda r: _compute(r)[1] - _compute(r)[0], reverse=True)[:n]
    rows = "".join(
        f"<tr><td>{html.escape(r['key'])}</td><td>{(_compute(r)[1] - _compute(r)[0]):.4f}</td>"
        f"<td>{html.escape(r['worker'])}</td><td>{html.escape(r['status'])}</td></tr>"
        for r in timed
    )
    return "<table><tr><th>key</th><th>seconds</th><th>worker</th><th>status</th></tr>" + rows + "</table>"


def _transfers(records: Sequence[dict[str, Any]], n: int = 50) -> str:
    moves = [
        (float(ss["stop"]) - float(ss["start"]), r["key"], str(ss.get("source", "")), r["worker"])
        for r in records for ss in r["startstops"] if ss["action"] == "transfer"
    ]
    if not moves:
        return "<p>No task fetched a dependency from another worker.</p>"
    total = sum(m[0] for m in moves)
    rows = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(src)}</td><td>{html.escape(dst)}</td>"
        f"<td>{seconds:.4f}</td></tr>"
        for seconds, key, src, dst in sorted(moves, reverse=True)[:n]
    )
    return (
        f"<p>{len(moves)} transfers, {total:.3f} s in all; the longest:</p>"
        "<table><tr><th>for task</th><th>from</th><th>to</th><th>seconds</th></tr>" + rows + "</table>"
    )


_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
section{margin-bottom:2em} table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
td.bar{width:200px} td.bar div{height:10px}
.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}
"""


def render_report(
    *, records: Sequence[dict[str, Any]], history: Iterable[Sequence[Any]], info: dict[str, Any],
    start: float, stop: float, code: str, title: str = "trioclust performance report",
) -> str:
    """The report's HTML.

    Args:
        records: the task stream's runs (Dask's dicts with ``prefix``).
        history: ``(time, worker, cpu percent, memory bytes)`` heartbeats.
        info: ``client.scheduler_info()`` at the end.
        start: when recording began (scheduler's clock).
        stop: when it ended.
        code: the source that ran.
        title: the page's title.
    """
    statuses: dict[str, int] = {}
    for record in records:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    workers = info.get("workers", {})
    summary = (
        f"<p>{len(records)} task runs in {stop - start:.3f} s on {len(workers)} workers "
        f"({sum(int(w.get('nthreads', 0)) for w in workers.values())} threads, "
        f"{format_bytes(sum(int(w.get('memory_limit', 0)) for w in workers.values()))} memory); "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + f". Scheduler {html.escape(str(info.get('address', '')))}; written "
        f"{html.escape(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stop)))}.</p>"
    )
    sections = [
        ("summary", "Summary", summary),
        ("task-stream", "Task stream", _task_stream_svg(records, start, stop)),
        ("progress", "Progress by prefix", _progress_table(records)),
        ("workers", "Workers: CPU and memory over time", _workers(history, start, stop)),
        ("slowest", "Slowest tasks", _slowest(records)),
        ("transfers", "Transfers", _transfers(records)),
        ("code", "Code", f"<pre>{html.escape(code) or '(the source could not be found)'}</pre>"),
    ]
    body = "".join(f'<section id="{sid}"><h2>{head}</h2>{content}</section>' for sid, head, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def render_task_stream(
    records: Sequence[dict[str, Any]], start: float, stop: float, title: str = "Task stream"
) -> str:
    """A page of the task stream alone (``get_task_stream(plot=True)``), as self-contained as the report.

    Args:
        records: the task stream's runs (Dask's dicts with ``prefix``).
        start: the left edge of the drawing (scheduler's clock).
        stop: its right edge.
        title: the page's title.
    """
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<section id="task-stream">{_task_stream_svg(records, start, stop)}</section></body></html>\n'
    )
