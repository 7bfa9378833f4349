"""The one base class for mistakes a user can fix: the CLI prints their message alone, no traceback."""

from __future__ import annotations


class GansegError(Exception):
    """Bad params, data, model files or cluster size: the message says what is wrong and where."""
