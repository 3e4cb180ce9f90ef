"""DomainNet, domain-incremental: six domains learned in turn, one shared 345-class label space.

Layout (as the DomainNet authors distribute it, and as S-Prompts reads it):
  <root>/domainnet/<domain>/<class>/<image>
  <root>/domainnet/<domain>_train.txt, <domain>_test.txt   lines "<domain>/<class>/<image> <label>"
Task order: clipart, infograph, painting, quickdraw, real, sketch (S-Prompts' order). Class ids
are the split files' labels; a class's name is its folder with "_" as spaces (S-Prompts turns
them into spaces as well), scored with "a photo of a {}.". painting_train.txt lacks one class
(t-shirt), so the label space is the union over all domains' split files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cl_bench import ScenarioContext, ScenarioSpec, hookimpl

from .image_folder import first_missing, no_root_message

VERSION = "1"
FOLDER = "domainnet"
DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
TEMPLATES = ("a photo of a {}.",)


def _expected(base: Path) -> list[Path]:
    return [path for domain in DOMAINS for path in (base / domain, base / f"{domain}_train.txt", base / f"{domain}_test.txt")]


def check(data_root: str | None) -> str | None:
    if data_root is None:
        return no_root_message("domainnet", "DomainNet (domainnet/<domain>/ and the <domain>_train/test.txt split files)")
    base = Path(data_root) / FOLDER
    gone = first_missing(_expected(base))
    if gone is None:
        return None
    return f"domainnet: DomainNet not found: {gone} is missing (expected {base}/<domain>/<class>/<image> and {base}/<domain>_{{train,test}}.txt for {', '.join(DOMAINS)})"


def _read_split(base: Path, file: str, names: dict[int, str]):
    """Image paths and labels of one split file; records each label's class folder in `names`."""
    import numpy as np

    from cl_bench import UserError

    from .image_folder import Samples

    paths, labels = [], []
    for number, line in enumerate((base / file).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit() or parts[0].count("/") != 2:
            raise UserError(f"domainnet: {base / file} line {number} is not '<domain>/<class>/<image> <label>': {line!r}")
        folder, label = parts[0].split("/")[1], int(parts[1])
        if names.setdefault(label, folder) != folder:
            raise UserError(f"domainnet: label {label} is class {names[label]!r} elsewhere but {folder!r} in {base / file} line {number}")
        paths.append(str(base / parts[0]))
        labels.append(label)
    return Samples(np.asarray(labels, dtype=np.int64), tuple(paths))


def build(params: dict[str, Any], context: ScenarioContext):
    # The plan ran check_data, which refuses no data root.
    assert context.data_root is not None
    from cl_bench import StreamTask, UserError, assemble_stream, file_sha256

    base = Path(context.data_root) / FOLDER
    folders: dict[int, str] = {}
    splits = {domain: {part: _read_split(base, f"{domain}_{part}.txt", folders) for part in ("train", "test")} for domain in DOMAINS}
    classes = sorted(folders)
    if classes != list(range(len(classes))):
        raise UserError(f"domainnet: the split files' labels must run 0..{len(classes) - 1} without gaps")
    class_names = [folders[c].replace("_", " ") for c in classes]
    size = context.image_size
    tasks = [StreamTask(d, list(classes), splits[d]["train"].dataset(size), splits[d]["test"].dataset(size)) for d in DOMAINS]
    metadata = {
        "version": VERSION,
        "image_size": size,
        "templates": list(TEMPLATES),
        "class_order": classes,
        "sources": {"layout": "DomainNet split files as distributed (S-Prompts' loader)", "class_names": "class folders, '_' as spaces"},
        "split_files_sha256": {f"{FOLDER}/{d}_{p}.txt": file_sha256(base / f"{d}_{p}.txt") for d in DOMAINS for p in ("train", "test")},
        "sizes": {d: {p: len(s) for p, s in splits[d].items()} for d in DOMAINS},
        "augmentation": "none (resize shorter side + centre crop, deterministic)",
    }
    return assemble_stream("domainnet", VERSION, "domain-il", tasks, class_names=class_names, templates=TEMPLATES, preload=False, metadata=metadata, params=params)


@hookimpl
def cl_bench_scenarios() -> list[ScenarioSpec]:
    return [
        ScenarioSpec(
            name="domainnet",
            factory=build,
            summary="DomainNet: clipart -> infograph -> painting -> quickdraw -> real -> sketch, one shared 345-class label space",
            protocol="domain-il",
            num_tasks=len(DOMAINS),
            version=VERSION,
            check_data=check,
        )
    ]
