"""The one base class for mistakes a user can fix: the CLI prints their message alone, no traceback."""

from __future__ import annotations


class GansegError(Exception):
    """Bad params, data, model files or cluster size: the message says what is wrong and where."""


class DataError(GansegError, ValueError):
    """The dataset folder, the split file or one of the files cannot be used; the message says which and why."""
