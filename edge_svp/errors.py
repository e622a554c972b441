"""The exception types that mean "the user asked for something we cannot do", and the
faults a run stops on by design.

The CLI turns each into a single line on stderr and its exit code: 2 for bad input, 3 for
a numerical fault, 130 for Ctrl-C, 143 for SIGTERM; anything else is a bug and keeps its
traceback.
"""

import difflib


class EdgeSVPError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class WriteFailed(EdgeSVPError):
    """An output could not be written (a full disk, a vanished folder); nothing partial was
    left under its name. Exit code 3 where it stopped training (edge_svp/run.py)."""


class DataNotFound(EdgeSVPError):
    """A dataset's files are not where the configuration says."""


class NumericalFault(EdgeSVPError):
    """NaN or inf in a loss or gradient: the block stopped, its last checkpoint is kept."""

    exit_code = 3


class Interrupted(EdgeSVPError):
    """Ctrl-C (exit code 130) or SIGTERM (143): the step in progress finished and a
    checkpoint was written."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class DataWarning(UserWarning):
    """Input that is usable but suspect (a single class, files left out), or a configuration
    key under its old name; the CLI prints it as one line."""


def did_you_mean(name: str, choices) -> str:
    """A ' (did you mean X?)' suffix naming the closest valid choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices) -> EdgeSVPError:
    choices = sorted(choices)
    return EdgeSVPError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose from: {', '.join(choices)}"
    )
