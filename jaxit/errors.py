"""Error classes for mistakes in what a user gave (a config, a name, a file): the `jaxit`
command prints them as one line `jaxit <cmd>: error: ...` with exit status 2 and no
traceback. Each is a ValueError, so Python callers can catch them as before."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A mistake in the user's input, reported without a traceback."""


class ConfigError(UserError):
    """A config field is unknown, of the wrong kind or out of its range."""


class UnknownNameError(UserError):
    """A task, method, strategy or other registered name that does not exist."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `known` to `name`, or ''."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
