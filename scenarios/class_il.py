"""Class-incremental streams on real data: `split-cifar100` and `imagenet-r`.

Each task holds the next block of a fixed class order (recorded in the result); at test time a
model scores every class seen so far, with no task id (protocol class-il). Global class ids are
the data set's own ids. `--set scenario.tasks=N` splits the order into N equal tasks.

Layouts under the data root:
- split-cifar100: cifar-100-python/{train,test,meta}, read by torchvision's CIFAR100 loader.
- imagenet-r: imagenet-r/train/<wnid>/<image> and imagenet-r/test/<wnid>/<image> (the fixed 80/20
  split that LAMDA-PILOT and PROOF distribute; 200 WordNet-id folders in each).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cl_bench import ScenarioContext, ScenarioSpec, hookimpl

from . import torchvision_sets as tv
from .class_il_data import CIFAR100_ORDER, IMAGENET_R_ORDER
from .image_folder import first_missing, no_root_message

VERSION = "1"
IMAGENET_R_DIR = "imagenet-r"


def check_cifar(data_root: str | None) -> str | None:
    if data_root is None:
        return no_root_message("split-cifar100", "CIFAR-100 (torchvision's cifar-100-python folder)")
    gone = tv.missing_file(Path(data_root), tv.CIFAR100_FILES)
    if gone is None:
        return None
    return f"split-cifar100: CIFAR-100 not found: {gone} is missing (expected {Path(data_root) / 'cifar-100-python'}/{{train,test,meta}}, torchvision's CIFAR100 layout)"


def check_imagenet_r(data_root: str | None) -> str | None:
    if data_root is None:
        return no_root_message("imagenet-r", "ImageNet-R (imagenet-r/train and imagenet-r/test)")
    base = Path(data_root) / IMAGENET_R_DIR
    gone = first_missing([base / "train", base / "test"])
    if gone is None:
        return None
    return f"imagenet-r: ImageNet-R not found: {gone} is missing (expected {base}/{{train,test}}/<wnid>/<image>, the PILOT/PROOF split)"


def tasks_dividing(name: str, total: int) -> Callable[[Mapping[str, Any]], None]:
    """The parameter check of a stream that splits `total` classes into `scenario.tasks` equal tasks."""

    def check(params: Mapping[str, Any]) -> None:
        from cl_bench import UserError

        tasks = params["tasks"]
        if tasks < 1 or total % tasks:
            raise UserError(f"scenario.tasks for {name} must divide its {total} classes (e.g. 5, 10 or 20), not {tasks}")

    return check


def task_parameter(params: Mapping[str, Any]) -> int:
    return params["tasks"]


def _stream(name: str, params: dict[str, Any], image_size: int, class_names: Sequence[str], order: Sequence[int], train, test, templates, metadata: dict):
    """Split `order` into equal tasks; each task's train and test sets hold exactly its classes."""
    from cl_bench import StreamTask, assemble_stream

    tasks = params["tasks"]
    per = len(order) // tasks
    records = []
    for t in range(tasks):
        classes = list(order[t * per : (t + 1) * per])
        records.append(StreamTask(f"classes {t * per + 1}-{(t + 1) * per}", classes, train.where(classes).dataset(image_size), test.where(classes).dataset(image_size)))
    return assemble_stream(
        name,
        VERSION,
        "class-il",
        records,
        class_names=class_names,
        templates=templates,
        preload=False,
        metadata={
            "version": VERSION,
            "image_size": image_size,
            "templates": list(templates),
            "class_order": list(order),
            "train_size": len(train),
            "test_size": len(test),
            "augmentation": "none (resize shorter side + centre crop, deterministic)",
            **metadata,
        },
        params=params,
    )


def build_cifar(params: dict[str, Any], context: ScenarioContext):
    # The plan ran check_data (which refuses no data root) and matched an image backbone (which has a size).
    assert context.data_root is not None and context.image_size is not None
    from cl_bench import UserError

    from .class_il_data import CIFAR100_TEMPLATES

    loaded = tv.load_cifar100(Path(context.data_root))
    if len(loaded.classes) != len(CIFAR100_ORDER):
        raise UserError(f"split-cifar100: the CIFAR-100 meta file names {len(loaded.classes)} classes, not 100")
    metadata = {
        "class_order_source": "MoE-Adapters4CL cil/class_orders/cifar100.yaml (the iCaRL order used by PODNet, DER, ZSCL)",
        "class_names_source": "torchvision CIFAR100 classes (the archive's fine_label_names)",
        "split_files_sha256": loaded.files,
    }
    return _stream("split-cifar100", params, context.image_size, loaded.classes, CIFAR100_ORDER, loaded.train, loaded.test, CIFAR100_TEMPLATES, metadata)


def build_imagenet_r(params: dict[str, Any], context: ScenarioContext):
    # The plan ran check_data (which refuses no data root) and matched an image backbone (which has a size).
    assert context.data_root is not None and context.image_size is not None
    from cl_bench import UserError

    from .class_il_data import IMAGENET_R_NAMES, IMAGENET_R_TEMPLATES
    from .image_folder import Samples, image_folder, sha256_lines

    base = Path(context.data_root) / IMAGENET_R_DIR
    splits, listing = {}, {}
    for part in ("train", "test"):
        classes, paths, labels = image_folder(base / part)
        if len(classes) != len(IMAGENET_R_NAMES):
            raise UserError(f"imagenet-r: {base / part} holds {len(classes)} class folders, expected the {len(IMAGENET_R_NAMES)} WordNet ids of ImageNet-R")
        splits[part] = (classes, Samples(labels, tuple(paths)))
        # No split file: the sorted list of image paths stands for it in the record.
        listing[f"{IMAGENET_R_DIR}/{part} (file list)"] = sha256_lines(str(Path(p).relative_to(base)) for p in paths)
    if splits["train"][0] != splits["test"][0]:
        raise UserError(f"imagenet-r: {base / 'train'} and {base / 'test'} hold different class folders")
    metadata = {
        "class_order_source": "PyCIL/LAMDA-PILOT seed 1993 (numpy.random.seed(1993); permutation(200)), as PROOF uses",
        "class_names_source": "PROOF utils/labels.json (imagenetr), by sorted WordNet id",
        "wnids": splits["train"][0],
        "split_files_sha256": listing,
    }
    return _stream("imagenet-r", params, context.image_size, IMAGENET_R_NAMES, IMAGENET_R_ORDER, splits["train"][1], splits["test"][1], IMAGENET_R_TEMPLATES, metadata)


@hookimpl
def cl_bench_scenarios() -> list[ScenarioSpec]:
    return [
        ScenarioSpec(
            name="split-cifar100",
            factory=build_cifar,
            summary="CIFAR-100 in 10 tasks of 10 classes (iCaRL order; scenario.tasks=5|10|20), scored over all classes seen so far",
            protocol="class-il",
            num_tasks=10,
            defaults={"tasks": 10},
            version=VERSION,
            check_data=check_cifar,
            check_params=tasks_dividing("split-cifar100", len(CIFAR100_ORDER)),
            count_tasks=task_parameter,
        ),
        ScenarioSpec(
            name="imagenet-r",
            factory=build_imagenet_r,
            summary="ImageNet-R, 200 classes in 10 tasks (PyCIL seed-1993 order; scenario.tasks), scored over all classes seen so far",
            protocol="class-il",
            num_tasks=10,
            defaults={"tasks": 10},
            version=VERSION,
            check_data=check_imagenet_r,
            check_params=tasks_dividing("imagenet-r", len(IMAGENET_R_ORDER)),
            count_tasks=task_parameter,
        ),
    ]
