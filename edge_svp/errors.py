"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and
keeps its traceback.
"""

import difflib


class EdgeSVPError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def did_you_mean(name: str, choices) -> str:
    """A ' (did you mean X?)' suffix naming the closest valid choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices) -> EdgeSVPError:
    choices = sorted(choices)
    return EdgeSVPError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose from: {', '.join(choices)}"
    )
