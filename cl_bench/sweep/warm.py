"""A sweep's warm worker: one process that imports the heavy libraries once and forks each run.

A `clbench run` process spends about 8 s importing PyTorch, Avalanche and open_clip before a run
that may take a few seconds. The local sweep engine therefore starts one warm worker per sweep
(`python -m cl_bench.sweep.warm`), which imports those libraries and the grid's plugins, then
forks a fresh child for every run. The child is what `python -m cl_bench run --config FILE
--quiet --resume` would be: it takes the run's environment and working folder, points its file
descriptors 1 and 2 at the run's log (so C-level output lands there too) and runs `cl_bench`'s
`__main__` module with that command line; its exit status is reported as a process's would be.
A crash or `os._exit` in one run ends that child only.

Why not `multiprocessing`'s forkserver: it is one server per Python process, started once with
the environment, preload list and working folder of that moment and kept for the life of the
process (a test session, a notebook), and its children re-import the parent's `__main__`. A
worker per sweep takes the sweep's environment and exactly the grid's plugins, and ends with it.

Dying together (Linux): the worker asks the kernel (PR_SET_PDEATHSIG) for SIGKILL when the sweep
thread that started it ends, and each run child asks the same for when the worker ends, so a
sweep killed even with SIGKILL takes the worker and every run down. The worker also kills its
runs and exits when its request pipe closes (the sweep is gone or done), which is what holds on
systems without PR_SET_PDEATHSIG. The worker ignores SIGINT: a Ctrl-C reaches the runs from the
terminal (they share its process group) or is forwarded by the sweep (`signal` below).

Forking is safe only from a process with one thread and no CUDA context, so the worker checks
both after its imports (availability checks during the imports go through NVML, which leaves
CUDA uninitialised) and says so; the sweep starts runs as separate processes otherwise.

Protocol: JSON lines. Sweep to worker: first {"preload": [module, ...], "plugins": [[kind, name],
...]}, then {"run": key, "module": "cl_bench", "argv": [...], "env": {...}, "cwd": path, "log":
path} or {"signal": number} (sent to every live run). Worker to sweep: {"ready": pid, ...} once,
then {"started": key, "pid": pid} and {"ended": key, "returncode": code} per run, the code as
`subprocess.Popen.returncode` has it (negative: killed by that signal). The worker's own output
(import warnings, one line per run started and ended) goes to `<out>/logs/warm-worker.txt`.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def python_module(module: str) -> list[str]:
    """The command that runs `module` as `python -m module` would, but with the working folder off
    `sys.path`: from a folder holding a clone (a `cl_bench/` directory), `-m` would import that
    folder instead of the installed package."""
    code = f"import os, runpy, sys\nif sys.path and sys.path[0] in ('', os.getcwd()): del sys.path[0]\nrunpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [sys.executable, "-c", code]


# Imported before the grid's plugins: what runs import, named as module paths (the sweep's layer
# sits below the command line, so it does not import it itself). The command line and the runner
# bring PyTorch, Avalanche's strategy modules, open_clip and torchvision; the rest are what the
# built-in plugins import inside functions (the packaged streams' scikit-learn digits, pandas
# and PIL's font rendering; tiny-clip's CLIP modules). A module missing here costs its import in
# every run, nothing more; one that fails to import is left to the runs that need it.
PRELOAD = (
    "torch",
    "torchvision",
    "open_clip",
    "avalanche.training",
    "avalanche.benchmarks",
    "avalanche.evaluation",
    "avalanche.models",
    "cl_bench.cli",
    "cl_bench.config.loading",
    "cl_bench.running.runner",
    "cl_bench.running.build",
    "cl_bench.running.strategy",
    "cl_bench.running.evaluation",
    "cl_bench.running.checkpoint",
    "cl_bench.publish.report",
    "cl_bench.sweep.local",
    "cl_bench.backbones.clip",
    "cl_bench.backbones.attention",
    "sklearn.datasets",
    "pandas",
    "PIL.ImageDraw",
    "PIL.ImageFont",
    "tabulate",
)

# In a run's or the worker's environment: the process asks the kernel to kill it when this
# process (the sweep, or the worker) dies.
PARENT_VARIABLE = "CL_BENCH_SWEEP_PARENT"


def die_with(parent: int) -> None:
    """Be killed (SIGKILL) when the process `parent`, this process's parent, dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _name_process(name: str) -> None:
    """The name `ps -o comm` and `top` show (Linux; 15 bytes at most)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_name = 15
        ctypes.CDLL(None).prctl(pr_set_name, name.encode()[:15], 0, 0, 0)


class _Lines:
    """Newline-ended JSON messages read from a file descriptor, with an optional timeout."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.closed = fd, b"", False

    def ready(self) -> bool:
        return b"\n" in self.buffer

    def fill(self) -> bool:
        """One read of what is there; False at end of file."""
        chunk = os.read(self.fd, 1 << 16)
        self.buffer += chunk
        self.closed = not chunk
        return bool(chunk)

    def take(self) -> dict[str, Any]:
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message; None on timeout; EOFError when the writer is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while not self.ready():
                if self.closed:
                    raise EOFError
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not selector.select(left):
                    return None
                self.fill()
        return self.take()


def _send(fd: int, message: Mapping[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


# ------------------------------------------------------------------------------------ sweep side


class WorkerGone(Exception):
    """The warm worker ended (or never became ready): its runs died with it."""


class WarmWorker:
    """The sweep's handle on its warm worker: start runs, learn when each ends."""

    def __init__(self, process: subprocess.Popen, replies: _Lines, ready: dict[str, Any]) -> None:
        self.process, self.replies, self.ready = process, replies, ready
        self.pids: dict[int, int] = {}  # run key -> pid, while the run lives

    @classmethod
    def start(cls, plugins: Iterable[tuple[str, str]], env: Mapping[str, str], log: Path, preload: Sequence[str] = PRELOAD) -> WarmWorker:
        """Start a worker and wait until it has imported everything; WorkerGone if it cannot.

        `env` is the worker's environment (its runs get their own); `log` takes its output."""
        log.parent.mkdir(parents=True, exist_ok=True)
        # The worker's own thread pools must stay at one thread, or it cannot fork: OpenBLAS starts
        # its pool when numpy is imported (one thread a core unless told). Runs set their PyTorch
        # threads themselves (build applies the plan's).
        pools = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        env = {**env, **pools, PARENT_VARIABLE: str(os.getpid()), "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"== warm worker of sweep {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            handle.flush()
            process = subprocess.Popen(
                python_module("cl_bench.sweep.warm"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=handle, env=env
            )
        assert process.stdin is not None and process.stdout is not None
        worker = cls(process, _Lines(process.stdout.fileno()), {})
        try:
            worker._write({"preload": list(preload), "plugins": [list(p) for p in plugins]})
            ready = worker.replies.next()
        except (EOFError, BrokenPipeError):
            worker.close()
            raise WorkerGone(f"the warm worker ended while importing (exit code {process.wait()}; see {log})") from None
        except BaseException:  # Ctrl-C while it imports
            worker.close()
            raise
        assert ready is not None
        worker.ready = ready
        if ready["threads"] != 1 or ready["cuda_initialized"]:
            worker.close()
            why = f"{ready['threads']} threads" if ready["threads"] != 1 else "CUDA initialised"
            raise WorkerGone(f"the warm worker cannot fork safely after its imports ({why})")
        return worker

    def _write(self, message: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def run(self, key: int, argv: Sequence[str], env: Mapping[str, str], log: Path, module: str = "cl_bench") -> None:
        """Start a run: `python -m MODULE *argv` in a fresh child of the worker, output to `log`."""
        try:
            self._write({"run": key, "module": module, "argv": list(argv), "env": dict(env), "cwd": os.getcwd(), "log": str(log)})
        except BrokenPipeError:
            raise WorkerGone(f"the warm worker ended (exit code {self.process.wait()})") from None

    def wait(self, timeout: float | None = None) -> tuple[int, int] | None:
        """(key, returncode) of the next run to end; None after `timeout` seconds; WorkerGone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = self.replies.next(left)
            except EOFError:
                raise WorkerGone(f"the warm worker ended (exit code {self.process.wait()})") from None
            if message is None:
                return None
            if "started" in message:
                self.pids[message["started"]] = message["pid"]
                continue
            self.pids.pop(message["ended"], None)
            return message["ended"], message["returncode"]

    def signal(self, number: int) -> None:
        """Send a signal to every run still alive."""
        try:
            self._write({"signal": number})
        except BrokenPipeError:
            pass

    def close(self) -> None:
        """End the worker; it kills any run still alive."""
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


# ----------------------------------------------------------------------------------- worker side


def _preload(modules: Sequence[str], plugins: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Import `modules`, then the factories of the grid's plugins; what failed is left to the runs."""
    import importlib
    import threading

    began, failed = time.perf_counter(), []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a run that needs it reports it in its own log
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        from cl_bench.config.registry import Registry

        registry = Registry()
        for kind, name in plugins:
            factory = getattr(registry.get(kind, name).spec, "factory", None)
            if isinstance(factory, str) and ":" in factory:
                importlib.import_module(factory.partition(":")[0])
    except Exception as exc:
        failed.append(f"plugins: {type(exc).__name__}: {exc}")
    cuda = sys.modules.get("torch.cuda")
    return {
        "seconds": round(time.perf_counter() - began, 3),
        "failed": failed,
        "threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count(),
        "cuda_initialized": bool(cuda is not None and cuda.is_initialized()),
    }


def serve() -> None:
    """The worker's main loop (`python -m cl_bench.sweep.warm`, started by `WarmWorker.start`)."""
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if parent is not None:
        die_with(int(parent))
    _name_process("clbench-warm")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # what an import prints would garble the replies; its warnings go to the log (fd 2)
    os.close(devnull)
    reader = _Lines(requests)
    try:
        first = reader.next()
    except EOFError:
        return
    assert first is not None
    report = _preload(first["preload"], first["plugins"])
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    print(f"imported {len(first['preload'])} modules and {len(first['plugins'])} plugins in {report['seconds']} s; failed: {report['failed'] or 'none'}", file=sys.stderr)
    _send(replies, {"ready": os.getpid(), **report})

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that SIGCHLD writes to wake_w
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    own = [requests, replies, wake_r, wake_w, selector.fileno()]
    runs: dict[int, int] = {}  # pid -> key
    worker = os.getpid()

    def reap() -> None:
        while runs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            key = runs.pop(pid, None)
            if key is not None:
                code = os.waitstatus_to_exitcode(status)
                print(f"run {key}: process {pid} ended, exit code {code}", file=sys.stderr, flush=True)
                _send(replies, {"ended": key, "returncode": code})

    while True:
        for event, _ in selector.select():
            if event.fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                reap()
                continue
            if not reader.fill():  # the sweep is done or gone: so are its runs
                for pid in runs:
                    os.kill(pid, signal.SIGKILL)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for pid in list(runs):
                    os.waitpid(pid, 0)
                return
            while reader.ready():
                message = reader.take()
                if "signal" in message:
                    for pid in runs:
                        os.kill(pid, message["signal"])
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                try:
                    pid = os.fork()
                except OSError as exc:  # no memory or process slot left: this run fails, the worker stays
                    with open(message["log"], "w", encoding="utf-8") as handle:
                        handle.write(f"clbench sweep: the warm worker could not start this run: {exc}\n")
                    _send(replies, {"ended": message["run"], "returncode": 1})
                    continue
                if pid == 0:
                    _become_run(message, own, worker)  # never returns
                runs[pid] = message["run"]
                print(f"run {message['run']}: forked process {pid}, log {message['log']}", file=sys.stderr, flush=True)
                _send(replies, {"started": message["run"], "pid": pid})
        reap()


def _become_run(request: Mapping[str, Any], own: Sequence[int], worker: int) -> None:
    """In a fresh child of the worker: be `python -m MODULE *argv` writing to the run's log."""
    code = 70  # EX_SOFTWARE: something below failed before the run could start
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        die_with(worker)
        _name_process("clbench-run")
        for fd in own:
            os.close(fd)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import faulthandler

        faulthandler.enable()  # a crash in C code leaves its Python stack in the log
        code = _main_module(request.get("module", "cl_bench"), request["argv"])
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _main_module(module: str, argv: Sequence[str]) -> int:
    """Run `python -m MODULE *argv` in this process; its exit code as the interpreter sets it."""
    import atexit
    import runpy
    import threading
    import traceback

    sys.argv = [sys.argv[0], *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # as the interpreter does: die of SIGINT
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter does on its way out
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    return code


if __name__ == "__main__":
    serve()
