"""Lock files: one process at a time for a leaderboard folder or for one run's files.

`held(path)` takes an exclusive `flock` on `path` (created if needed) and removes the file when
it lets go, so no lock file outlives its holder unless the holder is killed (a stale file then
holds no lock and is reused). A waiter may lock a file that the holder has just removed, so after
locking it checks that the path still names the file it holds, and tries again if not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


class Busy(Exception):
    """The lock is held by another process (raised by `held(..., wait=False)`)."""


@contextlib.contextmanager
def held(path: Path, wait: bool = True) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    mode = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, mode)
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                break
        except FileNotFoundError:
            pass
        except BlockingIOError:
            os.close(handle)
            raise Busy(str(path)) from None
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(handle)
