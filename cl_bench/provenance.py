"""Where and with what a run ran: library versions, git commit, hardware, thread counts.

Recorded in every result file (`versions`, `hardware`) so that a number can be traced to the
code and the machine that made it; none of it is part of the run id.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def versions_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "cl_bench": of("cl-bench"),
        "torch": of("torch"),
        "avalanche": of("avalanche-lib"),
        "open_clip": of("open_clip_torch"),
        "numpy": of("numpy"),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware_info(device, precision: str, threads_setting: int | None) -> dict[str, Any]:
    import torch

    info = {
        "device": str(device),
        "precision": precision,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads_setting": "auto (half the usable cores)" if threads_setting is None else threads_setting,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_name() -> str:
    """The CPU's model name: floating-point results (and so trained weights) can differ between CPU kinds."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def file_sha256(path: str | Path) -> str:
    """A file's sha256 (hex), read in 1 MiB blocks; public as `cl_bench.file_sha256` for plugins that record their files."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
