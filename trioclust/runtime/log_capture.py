"""Recent log lines, labelled by the server that wrote them.

Each server sets :data:`server_label` at the top of its ``serve()``; trio
tasks inherit the context they are spawned from, so every log record made
inside that server's nursery carries its label. A :class:`RecentLogs`
handler keeps the last lines per label, for ``cluster.get_logs()``.
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
