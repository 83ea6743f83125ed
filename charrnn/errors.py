"""Errors a user can fix. The CLI prints their message as one line; nothing else does."""


class CharrnnError(Exception):
    """A failure the user can act on (missing file, bad checkpoint): exit code 1."""

    exit_code = 1


class UsageError(CharrnnError):
    """A wrong option or argument: exit code 2."""

    exit_code = 2
