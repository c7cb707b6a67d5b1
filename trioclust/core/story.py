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

from collections.abc import Iterable

__all__ = ["InvalidTransition", "Story", "StoryEntry", "story"]

#: One transition: (key, start, finish, stimulus_id, time).
StoryEntry = tuple[str, str, str, str, float]
#: A sequence of transitions, oldest first.
Story = list[StoryEntry]


def story(log: Iterable[StoryEntry], keys: Iterable[str]) -> Story:
    """The entries of ``log`` about any of ``keys``, oldest first."""
    wanted = set(keys)
    return [entry for entry in log if entry[0] in wanted]


class InvalidTransition(RuntimeError):
    """A state machine was asked to move a key along a path its table lacks.

    Raised only under validation (``scheduler.validate`` / ``worker.validate``):
    it is a bug in trioclust, and the message carries what is needed to find it.

    Attributes:
        key: The key.
        start: Its state when the recommendation was followed.
        finish: The state recommended.
        stimulus_id: The stimulus being handled.
        story: The key's recorded transitions, oldest first.
    """

    def __init__(self, key: str, start: str, finish: str, stimulus_id: str, story: Story) -> None:
        self.key = key
        self.start = start
        self.finish = finish
        self.stimulus_id = stimulus_id
        self.story = story
        lines = "".join(f"\n  {entry!r}" for entry in story) or "\n  (none recorded)"
        super().__init__(
            f"No transition {start!r} -> {finish!r} for key {key!r} "
            f"(stimulus {stimulus_id!r}); its story (key, start, finish, stimulus_id, time):"
            f"{lines}"
        )

    def __reduce__(self) -> tuple[type[InvalidTransition], tuple[str, str, str, str, Story]]:
        return (type(self), (self.key, self.start, self.finish, self.stimulus_id, self.story))
