"""Names from untrusted places (result files, plugins, configs) become paths only through here.

`safe_slug` admits a short name of letters, digits and `.`, `_`, `-`, `+` (no leading dot, no
`..`), and `path_inside` joins such names under a root and checks that the resolved path stays
inside it (a symlink inside the root cannot lead out either).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError, shown

# A name (method, stream, backbone) is short; a file name built from three of them, a seed and a
# hash, plus a temporary file's prefix and suffix, must still fit the usual 255-byte limit.
MAX_NAME = 64
MAX_SEGMENT = 220
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def slug_problem(name: Any, limit: int = MAX_NAME) -> str | None:
    """Why `name` cannot be a path segment, or None when it can."""
    if not isinstance(name, str):
        return f"is {type(name).__name__}, not a string"
    if not name or len(name) > limit:
        return f"must be 1 to {limit} characters long"
    if not _SLUG.fullmatch(name) or ".." in name:
        return "may hold only letters, digits, '.', '_', '-' and '+', start with a letter or digit, and contain no '..'"
    return None


def safe_slug(name: Any, what: str, limit: int = MAX_NAME) -> str:
    """`name` itself when it is a safe path segment; else a one-line `UserError` naming `what`."""
    problem = slug_problem(name, limit)
    if problem:
        raise UserError(f"{what} {shown(name)} cannot name a file: it {problem}")
    return name


def path_inside(root: str | Path, *segments: str, what: str = "name") -> Path:
    """`root/segment/...` for safe segments, refused if it would resolve outside `root`."""
    root = Path(root)
    target = root.joinpath(*(safe_slug(segment, what, MAX_SEGMENT) for segment in segments))
    if not target.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{what} {shown(str(target))} would lead outside {root}")
    return target


def check_writable_folder(folder: str | Path, what: str) -> None:
    """Refuse a folder that cannot be created or written, before any work (nothing is left behind).

    The nearest existing ancestor must be a folder in which a file can be made: a probe file is
    created there and removed at once (this catches read-only mounts and /proc, even for root).
    """
    import tempfile

    path = Path(folder)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = "is not a folder" if existing == path else f"is inside {existing}, which is not a folder"
        raise UserError(f"{what} {path} {problem}; give a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot write in {existing} ({exc.strerror or type(exc).__name__})") from None


SWEEP_LOGS = "logs"  # in --out: a sweep's logs and run configurations, trackers' local stores
