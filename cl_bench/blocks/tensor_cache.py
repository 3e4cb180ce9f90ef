"""A disk cache for deterministic tensors: what a stream renders or splits the same way on every run
is built once and read back afterwards (public as `cl_bench.cached_tensors`).

An entry is two files named by the sha256 of the key's canonical JSON: `<hash>.safetensors` (the
tensors; never pickle) and `<hash>.json` (the manifest: the key, what the entry holds, the
safetensors file's sha256 and the versions that wrote it). A read checks the manifest's key and the
file's sha256; a missing entry is built silently, a corrupt or unreadable one is rebuilt and
rewritten with one warning line on stderr. Both files are written atomically (a temporary file,
then a rename), so a reader never sees half of one; two processes that build the same entry at once
both write it, and the last rename wins with identical content.

The folder is `$CL_BENCH_CACHE`, else the platform's user cache folder (`platformdirs`) with
`streams/` under it; `CL_BENCH_CACHE=off` turns caching off (an empty value counts as unset). The
folder can be deleted at any time. A folder that cannot be written leaves the run uncached with one
warning line; the cache never fails a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cl_bench.errors import UserError
from cl_bench.files import write_atomic, write_json

CACHE_VARIABLE = "CL_BENCH_CACHE"
OFF = "off"
FORMAT = "cl_bench.tensor-cache/1"

_warned: set[tuple[str, str]] = set()  # (kind, where): each problem is told once per process (a folder's once, read or write)


def cache_folder() -> Path | None:
    """Where entries live, or None when `CL_BENCH_CACHE=off` turns caching off."""
    value = os.environ.get(CACHE_VARIABLE, "").strip()
    if value.lower() == OFF:
        return None
    if value:
        return Path(value).expanduser().absolute()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cl_bench")) / "streams"


def canonical_key(key: Mapping[str, Any]) -> str:
    """The key as canonical JSON (sorted keys, no spaces, ASCII): what the entry's name hashes."""
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a tensor cache key must be JSON (strings, numbers, booleans, lists, mappings): {exc}") from None


def entry_name(key: Mapping[str, Any]) -> str:
    """The file name (without suffix) of the entry for `key`."""
    return _digest(canonical_key(key))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def cached_tensors(key: Mapping[str, Any], build: Callable[[], dict[str, torch.Tensor]], what: str) -> dict[str, torch.Tensor]:
    """The tensors `build()` returns, read from the cache when an entry for `key` is there.

    `key` (JSON: mappings, lists, strings, numbers) must hold everything that decides the tensors:
    the source files' sha256, the parameters and seeds, the versions of the code and libraries that
    make them. `what` names the entry in the manifest and in warnings ("embedded domain letters").
    `build` returns a mapping of names to CPU tensors; they come back with the same names, dtypes,
    shapes and values (bit for bit) whether read or built.
    """
    text = canonical_key(key)
    folder = cache_folder()
    if folder is None:
        return _checked(build(), what)
    name = _digest(text)
    data_path, manifest_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    found = _read(data_path, manifest_path, text, what)
    if found is not None:
        return found
    tensors = _checked(build(), what)
    _write(tensors, data_path, manifest_path, key, what)
    return tensors


def _checked(tensors: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(tensors, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise TypeError(f"{what}: the cache's build() must return a mapping of names (str) to tensors")
    return dict(tensors)


def _read(data_path: Path, manifest_path: Path, text: str, what: str) -> dict[str, torch.Tensor] | None:
    """The entry's tensors, or None (a miss: absent, or corrupt and so to be rebuilt)."""
    from safetensors.torch import load

    try:
        manifest_text = manifest_path.read_text(encoding="utf-8")
        data = data_path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None  # never built, or (partly) deleted: a plain miss
    except OSError as exc:
        _warn_once("folder", str(data_path.parent), f"cannot read the cache {data_path.parent} ({exc.strerror or exc}); building {what} without it")
        return None
    problem = None
    try:
        manifest = json.loads(manifest_text)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            problem = "its manifest is not a cl_bench tensor-cache manifest"
        elif canonical_key(manifest.get("key", {})) != text:
            problem = "its manifest holds another key"
        elif hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            problem = "its sha256 differs from the manifest's"
        else:
            return load(data)
    except Exception as exc:  # any damage to the files (bad JSON, a bad safetensors header) is a miss
        problem = f"it cannot be read ({type(exc).__name__})"
    _warn_once("corrupt", str(data_path), f"the cached {what} in {data_path} is damaged ({problem}); rebuilding it")
    return None


def _write(tensors: dict[str, torch.Tensor], data_path: Path, manifest_path: Path, key: Mapping[str, Any], what: str) -> None:
    """Store the entry; a folder that cannot be written costs one warning line, never the run."""
    from safetensors.torch import save

    data = save(_storable(tensors))
    manifest = {
        "format": FORMAT,
        "what": what,
        "key": json.loads(canonical_key(key)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "versions": _versions(),
    }
    try:
        # The tensors first, the manifest second: a reader that finds the manifest finds its file.
        write_atomic(data_path, lambda tmp: tmp.write_bytes(data))
        write_json(manifest_path, manifest)
    except (OSError, UserError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        _warn_once("folder", str(data_path.parent), f"cannot write the cache {data_path.parent} ({reason}); running without it (set {CACHE_VARIABLE} to a writable folder, or to {OFF})")


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each with its own memory (safetensors refuses tensors that share it)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {"cl_bench": of("cl-bench"), "safetensors": of("safetensors"), "torch": torch.__version__}


def _warn_once(kind: str, where: str, message: str) -> None:
    if (kind, where) not in _warned:
        _warned.add((kind, where))
        print(f"clbench: warning: {message}", file=sys.stderr)
