"""Lock files: one process at a time for a leaderboard folder or for one run's files.

`held(path)` takes an exclusive `flock` on `path` (created if needed) and removes the file when
it lets go, so no lock file outlives its holder unless the holder is killed (a stale file then
holds no lock and is reused). A waiter may lock a file that the holder has just removed, so after
locking it checks that the path still names the file it holds, and tries again if not.

What callers rely on (`leaderboard.publish` waits, `runner.run` refuses with `wait=False`):
1. exclusive: one holder per path, across processes and between two `held` in one process (a
   flock belongs to an open file), also while a releasing holder unlinks the file;
2. `wait=True` blocks until the holder lets go (publishes take turns); `wait=False` raises `Busy`
   at once (a second run of one configuration is refused in one line);
3. never stale: the kernel drops the flock when the holder's file closes, on SIGKILL or a crash
   too, so a killed holder blocks nobody: no timeout, PID check or manual clean-up;
4. no litter: the file is removed on release (also on an exception or Ctrl-C); only a killed
   holder leaves it, empty and unlocked, and the next holder removes it. docs/safety.md promises
   `.<folder>.lock` and `.<run id>.lock` are removed, and test_crash_safety.py checks that
   nothing is left beside the folders;
5. scope: POSIX. Without `fcntl` (Windows) nothing is locked. Where `flock` fails (some FUSE
   filesystems) the OSError stops the command; it never runs unlocked. On NFS, Linux emulates
   flock with the server's byte-range locks, so exclusion across machines holds as far as the
   server's lock manager and the client's attribute cache allow (untested; best effort), and a
   crashed client's lock lasts until the server's lease expires.

Why not the `filelock` package (checked with 3.12, the lowest version worth requiring, and
4.3): `filelock.FileLock` (UnixFileLock, also flock) keeps 1-3 but by design never removes its
lock file, so every leaderboard's parent and every `--out` would keep one per configuration,
breaking 4; unlinking it ourselves after release brings back the race that the inode check
above closes (3.12 does not check for it). `SoftFileLock` removes its file, but its lock is the
file's existence: in 3.12 a holder killed with SIGKILL leaves a file that blocks every later
publish or run until someone deletes it, breaking 3 (4.x guesses staleness from a recorded PID
and host name, a heuristic where the kernel gives a guarantee). What filelock would add, locks
on Windows and a fallback where flock is missing, cl_bench does not need: its crash safety is
built for Linux already (renameat2, PR_SET_PDEATHSIG). So the lock stays this module.
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
