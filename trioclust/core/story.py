"""The transition log both state machines keep, and the error that quotes it."""

# Theory of operation
# ===================
#
# Each state machine appends one tuple per transition to a bounded deque:
# ``(key, start, finish, stimulus_id, time)``, the time being its clock's
# reading at the start of the ``handle`` call (one reading per call, not per
# transition: the log is the hot path's only bookkeeping). ``story(log,
# keys)`` filters it. Under validation a recommendation whose
# ``(start, finish)`` the table lacks, and that is not listed as a
# recommendation made stale by design, raises ``InvalidTransition`` quoting
# the key's story.

from __future__ import annotations

from collections.abc import Iterable, Sequence

from trioclust.core.keys import Key
from trioclust.errors import InvalidTransition

__all__ = ["InvalidTransition", "Story", "StoryEntry", "entries_after", "story"]

#: One transition: (key, start, finish, stimulus_id, time).
StoryEntry = tuple[Key, str, str, str, float]
#: A sequence of transitions, oldest first.
Story = list[StoryEntry]


def entries_after(log: Sequence[StoryEntry], mark: StoryEntry | None) -> Story:
    """The entries appended to ``log`` after ``mark`` (its last entry when
    read before; None: all it holds), oldest first. Walks back from the end,
    so it costs what was appended, not the log's length."""
    new = []
    for entry in reversed(log):
        if entry is mark:
            break
        new.append(entry)
    new.reverse()
    return new


def story(log: Iterable[StoryEntry], keys: Iterable[Key]) -> Story:
    """The entries of ``log`` about any of ``keys``, oldest first."""
    wanted = set(keys)
    return [entry for entry in log if entry[0] in wanted]
