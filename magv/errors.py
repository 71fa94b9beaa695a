"""Exceptions that carry their exit code to the CLI.

`BadInput` means the user gave something we cannot use (exit 2, nothing written);
`RunFailed` means the work itself failed (exit 1).
"""


class MagvError(Exception):
    exit_code = 1


class BadInput(MagvError):
    """Input that cannot be used. The message names the file, line or field and what was expected."""

    exit_code = 2


class RunFailed(MagvError):
    exit_code = 1


class StoreLocked(RunFailed):
    """Another process holds the database for writing."""


class Interrupted(MagvError):
    """Ctrl-C, with what was saved: the message says it, exit code 130 as for any SIGINT."""

    exit_code = 130
