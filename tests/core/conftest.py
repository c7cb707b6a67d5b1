"""Fixtures for the sans-IO core tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def check_leaks() -> None:
    """Override the suite-wide leak check (about 60 ms a test) with nothing.

    The core opens no thread, socket or process (``test_imports.py`` proves it
    imports none of the modules that could), so its tests cannot leak them.
    """
