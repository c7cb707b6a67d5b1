"""Recent log lines, labelled by the server that wrote them.

Each server sets :data:`server_label` at the top of its ``serve()``; trio
tasks inherit the context they are spawned from, so every log record made
inside that server's nursery carries its label. A :class:`RecentLogs`
handler keeps the last lines per label, for ``cluster.get_logs()``; the one
:func:`process_logs` returns serves ``client.get_scheduler_logs()`` and
``client.get_worker_logs()``, each server reading its own label's lines.
"""

from __future__ import annotations

import logging
from collections import deque
from contextvars import ContextVar

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

server_label: ContextVar[str] = ContextVar("trioclust_server_label", default="")


class RecentLogs(logging.Handler):
    """Keeps the last ``maxlen`` formatted lines of each server, by label."""

    def __init__(self, maxlen: int = 1000) -> None:
        super().__init__(level=logging.INFO)
        self.maxlen = maxlen
        self.lines: dict[str, deque[str]] = {}
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        label = server_label.get()
        if not label:
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        lines = self.lines.get(label)
        if lines is None:
            lines = self.lines[label] = deque(maxlen=self.maxlen)
        lines.append(line)

    def install(self) -> None:
        """Attach to the ``trioclust`` logger, making sure INFO lines reach it."""
        logger = logging.getLogger("trioclust")
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(self)

    def uninstall(self) -> None:
        logging.getLogger("trioclust").removeHandler(self)

    def recent(self, label: str, n: int | None = None) -> list[tuple[str, str]]:
        """The last ``n`` (all if None) lines of ``label`` as ``(level, line)``, oldest first."""
        lines = list(self.lines.get(label, ()))
        if n is not None:
            lines = lines[-n:] if n > 0 else []
        return [(_level_of(line), line) for line in lines]


def _level_of(line: str) -> str:
    parts = line.split(" - ", 3)  # LOG_FORMAT: time - name - level - message
    return parts[2] if len(parts) == 4 else "INFO"


_process_logs: RecentLogs | None = None


def process_logs() -> RecentLogs:
    """This process's log capture for servers, installed on first use."""
    global _process_logs
    if _process_logs is None:
        _process_logs = RecentLogs()
        _process_logs.install()
    return _process_logs
