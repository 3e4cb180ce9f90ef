"""A class-incremental stream read from local image folders.

Layout: <data root>/folders/<task>/<train|test>/<class name>/<image>.png, tasks in name order.
"""

from pathlib import Path

import cl_bench

SPLITS = ("train", "test")


def missing(data_root):
    """None when the data is there, else what is missing (checked before any work)."""
    root = Path(data_root or "") / "folders"
    tasks = sorted(p for p in root.glob("*") if p.is_dir())
    if not data_root or not tasks:
        return f"folders: no task folders under {root}; give --data-root DIR holding folders/<task>/<train|test>/<class>/"
    for task in tasks:
        for split in SPLITS:
            if not (task / split).is_dir():
                return f"folders: {task / split} is missing"
    return None


def build(params, context):
    import numpy as np
    import torch
    from PIL import Image

    def split(folder, names, ids):
        images, targets = [], []
        for name, cid in zip(names, ids):
            for file in sorted((folder / name).glob("*.png")):
                pixels = np.asarray(Image.open(file).convert("RGB").resize((params["size"],) * 2))
                images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
                targets.append(cid)
        return cl_bench.classification_dataset(torch.stack(images), torch.tensor(targets))

    root = Path(context.data_root) / "folders"
    class_names, tasks = [], []
    for task in sorted(p for p in root.iterdir() if p.is_dir()):
        names = sorted(p.name for p in (task / "train").iterdir() if p.is_dir())
        ids = list(range(len(class_names), len(class_names) + len(names)))  # global class ids
        class_names += names
        tasks.append(cl_bench.StreamTask(task.name, ids, *(split(task / s, names, ids) for s in SPLITS)))
    return cl_bench.assemble_stream(
        "folders",
        "1",
        "class-il",
        tasks,
        class_names=class_names,
        preload=True,  # small, in memory, no random transforms
        params=params,
    )


@cl_bench.hookimpl
def cl_bench_scenarios():
    return [
        cl_bench.ScenarioSpec(
            name="folders",
            factory=build,
            summary="class-incremental tasks from local image folders",
            protocol="class-il",
            num_tasks=2,
            defaults={"size": 32},
            check_data=missing,
        )
    ]
