"""The project's error families and the exit code of each; torch-free, imported by every layer.

* :class:`UserError` — bad input (a flag, a YAML key, a missing or damaged file). The message is
  one sentence naming the input and the fix; entry points exit with status 2 before writing.
* :class:`RunFailure` — a run that started and could not go on (a solver blow-up, a non-finite
  loss); exit status 3, with everything saved so far left intact.
* :class:`Interrupted` — SIGINT/SIGTERM after a checkpoint was written; exit 128 + signal.
* :class:`StoppedAtOnce` — a second SIGINT/SIGTERM: stopped where it was; exit 128 + signal.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 3


class UserError(ValueError):
    """Input that cannot be used; the message is the whole story."""


class ConfigError(UserError):
    """A bad flag, YAML key or option value."""


class RunFailure(RuntimeError):
    """A run that started stopped on a failure it cannot get past; the message says what to change."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM: a checkpoint was written; exit with 128 + signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StoppedAtOnce(BaseException):
    """A second SIGINT or SIGTERM: stop where the program is, keeping the last checkpoint; exit 128 + signal.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except Exception`` on the way up
    swallows it; the message is the whole story.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def exit_code(exc: BaseException) -> int | None:
    """The exit status of an error of the families above (the one exit-code table); None for anything else."""
    if isinstance(exc, UserError):
        return EXIT_USER_ERROR
    if isinstance(exc, RunFailure):
        return EXIT_RUN_FAILED
    if isinstance(exc, (Interrupted, StoppedAtOnce)):
        return exc.exit_code
    return None
