"""The failures a user can cause or meet, each with its exit code; `cli.dispatch` is the one place that turns them
into one line on stderr (no traceback) and that exit code. Every subcommand uses the same table (README, "Exit codes").
Anything else that escapes a command is a bug and keeps its traceback.
"""

EXIT_OK = 0
EXIT_PROBLEMS = 1  # `check` found problems
EXIT_USAGE = 2  # a wrong argument, a missing or malformed input file, a refused --out
EXIT_HUB = 3  # the Hub refused: no token, bad token, no write access, no such repo
EXIT_NETWORK = 4  # a download or push could not reach the network
EXIT_INTERRUPTED = 130  # Ctrl-C


class UserError(Exception):
    """A failure explained in one line; `exit_code` says which kind."""

    exit_code = EXIT_USAGE


class InputError(UserError, ValueError):
    """A wrong argument or a malformed input (file, row, checkpoint, source)."""


class HubError(UserError, RuntimeError):
    exit_code = EXIT_HUB


class NetworkError(UserError, OSError):
    exit_code = EXIT_NETWORK


class Interrupted(UserError):
    """Ctrl-C, with a line that says what was kept (e.g. finished work a rerun resumes from)."""

    exit_code = EXIT_INTERRUPTED
