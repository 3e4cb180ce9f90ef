"""The child process of tests/cli/test_crash_safety.py: `python -m crash_driver POINT ARGV...` is
`clbench ARGV...` SIGKILLed at POINT (run by a warm worker: a fresh fork per case)."""

import os
import signal
import sys

from cl_bench import files
from cl_bench.cli import main
from cl_bench.publish import leaderboard
from cl_bench.running import runner
from cl_bench.running.strategy import ClStrategy


def kill_at(owner, name, call, before=False):
    """SIGKILL this process at the `call`-th call of owner.name, before or after it runs."""
    original, calls = getattr(owner, name), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if before and calls[0] == call:
            os.kill(os.getpid(), signal.SIGKILL)
        value = original(*args, **kwargs)
        if not before and calls[0] == call:
            os.kill(os.getpid(), signal.SIGKILL)
        return value

    setattr(owner, name, wrapper)


point, *argv = sys.argv[1:]
if point == "publish-staging":  # after the first result is copied into the staging folder
    kill_at(leaderboard, "write_json", 1)
elif point == "publish-pages":  # pages and plots regenerated in the staging folder, not swapped in
    kill_at(leaderboard, "regenerate", 1)
elif point == "publish-swapped":  # swapped in, the old state not yet removed
    kill_at(leaderboard, "_swap_in", 1)
elif point == "publish-fallback":  # no atomic exchange: killed between the two renames
    leaderboard._exchange = lambda first, second: False
    kill_at(os, "rename", 1)
elif point == "run-training":  # the first iteration of the second task (iters=2)
    kill_at(ClStrategy, "_after_training_iteration", 3)
elif point == "run-tensors-write":  # the second checkpoint's tensors file written, not renamed
    kill_at(files.os, "replace", 4, before=True)  # (renames: tensors, manifest, partial result per task)
elif point == "run-checkpoint-write":  # the second checkpoint's tensors file in place, its manifest written, not renamed
    kill_at(files.os, "replace", 5, before=True)
elif point == "run-before-partial":  # the second checkpoint written, its partial result not
    kill_at(runner, "write_result", 2, before=True)
sys.exit(main(argv))
