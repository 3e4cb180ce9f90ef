"""Writing files so that no reader ever sees half of one: a temporary file in the same folder,
then a rename; the space and permission problems that can stop a write, as one-line errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError


def write_atomic(path: Path, write) -> None:
    """Call `write(temporary_path)`, then rename it over `path` (same folder, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes private files; results are for sharing
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException as exc:
        full = _out_of_space(exc, path.parent)  # asked before the temporary file frees its space
        Path(temporary).unlink(missing_ok=True)
        if full:
            raise UserError(
                f"no space left on the device of {path.parent} while writing {path.name} (nothing was half-written); free space and rerun"
                + (" with --resume" if ".ckpt" in path.suffixes else "")  # a checkpoint's manifest or its tensors file
            ) from None
        raise


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of disk (torch.save reports it as a RuntimeError without errno,
    safetensors as its own error quoting Rust's "os error N")."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if f"(os error {errno.ENOSPC})" in str(exc) or f"(os error {errno.EDQUOT})" in str(exc):
        return True  # safetensors, which has removed what it wrote by now
    if not isinstance(exc, RuntimeError):
        return False
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temporaries(path: Path) -> None:
    """Delete what an interrupted `write_atomic(path, ...)` left (hidden `.<name>.*.tmp` files)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp") if path.parent.is_dir() else []:
        stale.unlink(missing_ok=True)

