"""The one exception type for bad input.

Anything a user can get wrong (a name, a type, a path, a file) raises `UserError` with a message
that says what is wrong and how to fix it. The CLI prints it on one line and exits with code 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

# An echoed value is cut to this many characters: a crafted input must not make a huge message.
SHOWN_CHARS = 80


class UserError(Exception):
    """Bad input, reported to the user as one line (exit code 2)."""


# Characters that change how a terminal or a page shows the text around them: the C0 and C1
# controls (line breaks, escape sequences: ESC and the one-byte CSI, U+009B) and the
# bidirectional controls that reorder text (right-to-left overrides, isolates, marks).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str) -> str:
    """`text` on one line and inert: line breaks, other control characters and bidirectional
    controls turned into spaces."""
    return "".join(" " if ord(c) < 32 or 127 <= ord(c) <= 159 or c in _BIDI_CONTROLS else c for c in text)


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` on one line and at most `limit` characters, for an error message."""
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """The repr of `value` for an error message: on one line and at most `limit` characters.

    Containers are shown a few levels and items deep, so a value that expands to billions of
    items (shared references) costs no more than a small one.
    """
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 8
    return clip(short.repr(value), limit)


def unknown_name(kind: str, name: str, known: Iterable[str], hint: str = "") -> UserError:
    """A `UserError` for an unknown name, with the closest match and the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5) if isinstance(name, str) else []
    suggestion = f"; did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(known) if known else "(none)"
    return UserError(f"unknown {kind} {shown(name)}{suggestion} Known: {listing}.{(' ' + hint) if hint else ''}")
