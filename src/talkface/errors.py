"""The one error type for user mistakes: the CLI prints it as one line and exits with code 2."""
from __future__ import annotations

import os


class TalkfaceError(Exception):
    """A problem with what the user gave us (a file, a value), as opposed to a bug."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
