"""Fixtures for the sans-IO core tests."""

from __future__ import annotations

import pytest

from trioclust.core.scheduler_transitions import SchedulerTransitions
from trioclust.core.worker_state import WorkerState


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    """Override the suite-wide leak check (about 60 ms a test) with nothing.

    The core opens no thread, socket or process (``test_imports.py`` proves it
    imports none of the modules that could), so its tests cannot leak them.
    """


@pytest.fixture(autouse=True)
def validate_state_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every state machine made in these tests validates its transitions.

    ``validate`` defaults to False for speed; here an unknown transition must
    raise ``InvalidTransition`` rather than be dropped. A test that needs the
    production behaviour passes ``validate=False``.
    """
    monkeypatch.setitem(SchedulerTransitions.__init__.__kwdefaults__, "validate", True)
    monkeypatch.setitem(WorkerState.__init__.__kwdefaults__, "validate", True)
