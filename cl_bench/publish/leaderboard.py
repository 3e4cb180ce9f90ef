"""`clbench publish`: admit result files to a leaderboard folder and regenerate its pages.

Layout of the folder:
- `results/<scenario>/<method>/<run id>.json`: the published result files (data);
- `README.md`, `index.html`, `plots/*.svg`, `configs/*.json`: generated from them on every
  publish by `pages.regenerate` (SVG and deterministic output, so the repository carries no new
  binaries and no churn);
- `header.md` (optional, hand-written): text placed at the top of the generated README, such as
  the command that produced the results;
- `reported.json` (optional, hand-written): numbers the papers report, in their own tables and
  never mixed with ours: `[{"method", "scenario", "backbone", "source", "protocol", "metrics": {...}}]`;
  an entry with a `protocol` is shown beside each of our streams of that protocol.

Every file is checked before anything is written: schema, recomputed metrics, complete status, safe
names, the same stream version and protocol as the results already published for that stream, no
duplicate run. Then, under a lock file beside the folder (`.<folder>.lock`), the whole new state
is built in a temporary folder beside it (a copy of the old one plus the new results, pages and
plots) and swapped in with one atomic rename exchange. A refusal, a crash or a `kill -9` at any
point leaves either the previous folder byte for byte or the complete new one; leftovers of an
interrupted publish are cleaned by the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cl_bench import locks
from cl_bench.errors import UserError, clip, shown
from cl_bench.files import current_umask, write_json
from cl_bench.paths import check_writable_folder, path_inside
from cl_bench.publish.pages import published, regenerate, result_location
from cl_bench.results.validation import load_valid


def run_key(data: Mapping[str, Any]) -> str:
    """What makes two result files the same run: stream and its parameters, method and settings, backbone, seed."""
    scenario, method = data["scenario"], data["method"]
    return json.dumps(
        [scenario["name"], scenario.get("params", {}), method["name"], method.get("hyperparameters", {}), data["backbone"]["name"], data["seed"]],
        sort_keys=True,
        default=str,
    )


def read_incoming(files: Sequence[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Load and check the files to publish on their own (valid, complete, safe names); writes nothing."""
    incoming = []
    for file in files:
        data = load_valid(file).data
        if data["status"] != "complete":
            raise UserError(f"{file}: a partial run cannot be published; finish it with `clbench run ... --resume`")
        try:
            result_location(data)
        except UserError as exc:
            raise UserError(f"{file}: {exc}") from None
        incoming.append((Path(file), data))
    return incoming


def admit(incoming: Sequence[tuple[Path, dict[str, Any]]], folder: Path, removed: Collection[Path] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """Check the incoming results against each other and the folder (less the `removed` files);
    return those to add."""
    published_results = [(p, d) for p, d in published(folder) if p not in removed]
    streams = {d["scenario"]["name"]: (d["scenario"].get("version"), d["scenario"]["protocol"], p) for p, d in published_results}
    seen = {run_key(d): p for p, d in published_results}
    taken = {p.relative_to(folder): p for p, _ in published_results}
    accepted = []
    for file, data in incoming:
        scenario = data["scenario"]
        mine = (scenario.get("version"), scenario["protocol"])
        if scenario["name"] in streams and streams[scenario["name"]][:2] != mine:
            version, protocol, where = streams[scenario["name"]]
            raise UserError(
                f"{file}: {scenario['name']} version {clip(str(mine[0]))} ({clip(mine[1])}) cannot share a table with version {clip(str(version))} ({clip(protocol)}) "
                f"already published ({where}); publish it to another --leaderboard"
            )
        streams.setdefault(scenario["name"], (*mine, file))
        key = run_key(data)
        if key in seen:
            raise UserError(f"{file}: the same run ({data['method']['name']} on {scenario['name']}, seed {data['seed']}, same settings) is already in {seen[key]}")
        seen[key] = file
        # A published result is replaced only knowingly: a file claiming a published run id (a
        # schema-2 one, whose id is not re-derived from its content) never overwrites it.
        location = result_location(data)
        if location in taken:
            raise UserError(
                f"{file}: {location} is already published (run id {clip(data['run_id'])}); to replace it, delete {taken[location]} and publish again"
            )
        taken[location] = file
        accepted.append((file, data))
    return accepted


def to_remove(folder: Path, run_ids: Sequence[str]) -> list[Path]:
    """The published files of `run_ids` (under the lock); an unknown run id is a one-line error."""
    import difflib

    by_id = {data["run_id"]: path for path, data in published(folder)}
    for run_id in run_ids:
        if run_id not in by_id:
            close = difflib.get_close_matches(run_id, list(by_id), n=1, cutoff=0.6)
            suggestion = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"--remove {shown(run_id)}: no result with this run id is published in {folder}{suggestion}")
    return sorted({by_id[run_id] for run_id in run_ids})


def publish(files: Sequence[str | Path], folder: str | Path, remove: Sequence[str] = ()) -> tuple[list[Path], list[Path]]:
    """Add the accepted files to the leaderboard and retract the published results of the `remove`
    run ids, regenerating its pages, all or nothing; returns the copies and the removed files.
    With neither, the pages are regenerated from the results the folder holds."""
    folder = _leaderboard_folder(folder)
    if remove and not (folder / "results").is_dir():
        raise UserError(f"--remove: {folder} holds no published results")
    if not files and not remove and not folder.is_dir():
        raise UserError(f"--leaderboard {folder} does not exist: nothing to regenerate (give result files to publish)")
    incoming = read_incoming(files)
    with _locked(folder):
        removed = to_remove(folder, remove)
        accepted = admit(incoming, folder, removed)
        with _staged(folder) as stage:
            for path in removed:
                gone = stage / path.relative_to(folder)
                gone.unlink()
                for parent in (gone.parent, gone.parent.parent):  # results/<stream>/<method>/ left empty
                    if parent != stage / "results" and not any(parent.iterdir()):
                        parent.rmdir()
            if removed:
                forget_verified(stage, {load_run_id(path) for path in removed})
            copies = []
            for _, data in accepted:
                location = result_location(data)
                write_json(path_inside(stage, *location.parts, what="result path"), data)
                copies.append(folder / location)
            regenerate(stage)
            _swap_in(stage, folder)
    return copies, removed


def load_run_id(path: Path) -> str:
    return load_valid(path).data["run_id"]


def forget_verified(folder: Path, run_ids: set[str]) -> None:
    """Drop the `clbench verify` records of retracted results from the folder's verified.json."""
    from cl_bench.publish.pages import VERIFIED, read_verified

    if not (folder / VERIFIED).is_file():
        return
    rows = [row for row in read_verified(folder) if row["run_id"] not in run_ids]
    write_json(folder / VERIFIED, {"schema": "cl_bench.verified/1", "rows": rows})


# ---------------------------------------------------------------------------------- all or nothing


def _leaderboard_folder(folder: str | Path) -> Path:
    folder = Path(folder).resolve()  # a symlinked folder is published where it points
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--leaderboard {folder} is not a folder")
    if not folder.parent.is_dir():
        raise UserError(f"--leaderboard {folder}: its parent folder does not exist; create it first")
    check_writable_folder(folder.parent, "--leaderboard's parent folder")  # the stage and the lock go there
    return folder


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold `.<folder>.lock` beside the folder, then undo what an interrupted publish left."""
    with locks.held(folder.parent / f".{folder.name}.lock"):
        _recover(folder)
        yield


def _leftovers(folder: Path, kind: str) -> list[Path]:
    return sorted(folder.parent.glob(f".{folder.name}.{kind}-*"))


def _recover(folder: Path) -> None:
    """Undo what an interrupted publish left (called under the lock, so nothing else is running)."""
    old = _leftovers(folder, "old")
    if old and not folder.exists():  # killed between the two renames of the fallback swap
        os.rename(old.pop(), folder)
    for stale in old + _leftovers(folder, "stage"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` holding a copy of it; removed on the way out."""
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stage-", dir=folder.parent))
    try:
        if folder.is_dir():
            shutil.copytree(folder, stage, symlinks=True, dirs_exist_ok=True)  # copies the folder's mode too
        else:
            os.chmod(stage, 0o777 & ~current_umask())
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # after a swap it holds the previous state


def _swap_in(stage: Path, folder: Path) -> None:
    """Make `stage` the folder in one step; afterwards `stage` holds the old state (or nothing)."""
    if not folder.exists():
        os.rename(stage, folder)
    elif not _exchange(stage, folder):
        # No atomic exchange on this system: two renames; a crash between them is undone by `_recovered`.
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(folder, old)
        os.rename(stage, folder)
        shutil.rmtree(old, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))
