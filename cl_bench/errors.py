"""The one exception type for bad input.

Anything a user can get wrong (a name, a type, a path, a file) raises `UserError` with a message
that says what is wrong and how to fix it. The CLI prints it on one line and exits with code 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input, reported to the user as one line (exit code 2)."""


def unknown_name(kind: str, name: str, known: Iterable[str], hint: str = "") -> UserError:
    """A `UserError` for an unknown name, with the closest match and the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    suggestion = f"; did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(known) if known else "(none)"
    return UserError(f"unknown {kind} '{name}'{suggestion} Known: {listing}.{(' ' + hint) if hint else ''}")
