"""Reference data of the real-data image streams (`mtil`, `xtail`): what ZSCL distils on, ImageNet's
training images and the captions of Conceptual Captions' validation split, read from the data root
in ZSCL's layout (Thunderbeee/ZSCL `mtil/src/datasets/imagenet.py` and `cc.py`) when a method first
asks for them (`stream.reference()`); runs of other methods never read them.

    <data root>/ImageNet/train/<class folder>/<image>      (torchvision ImageFolder layout)
    <data root>/Validation_GCC-1.1.0-Validation_output.csv  (ZSCL's gather_cc.py output: tab-separated,
                                                             a `title` column holding the captions)

Images are read lazily and resized like the streams' own (shorter side, centre crop: ZSCL's test
transform); the captions are texts without images, so every image's label is -1 (no text of its
own). Neither file enters the run id: reference data is read only by the methods that ask for it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench import UserError

from .image_folder import IMAGE_EXTENSIONS, PathImages

IMAGENET_TRAIN = Path("ImageNet") / "train"
CC_CAPTIONS = "Validation_GCC-1.1.0-Validation_output.csv"


def imagenet_cc(data_root: str, image_size: int) -> Callable[[], Any]:
    """The loader `assemble_stream(reference=...)` takes: reads the files on first use."""
    return lambda: read_imagenet_cc(Path(data_root), image_size)


def read_imagenet_cc(root: Path, image_size: int):
    from cl_bench import ReferenceData

    train, captions = root / IMAGENET_TRAIN, root / CC_CAPTIONS
    missing = [str(p) for p in (train, captions) if not p.exists()]
    if missing:
        raise UserError(
            f"reference data missing: {', '.join(missing)}; ZSCL distils on ImageNet's training images ({train}/<class>/<image>) "
            f"and the Conceptual Captions validation captions ({captions}, the CSV of ZSCL's gather_cc.py)"
        )
    paths = [
        entry.path
        for folder in sorted(e.path for e in os.scandir(train) if e.is_dir())
        for entry in sorted(os.scandir(folder), key=lambda e: e.name)
        if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    with open(captions, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if "title" not in (reader.fieldnames or []):
            raise UserError(f"{captions}: no 'title' column (the captions); expected the tab-separated CSV of ZSCL's gather_cc.py")
        texts = [row["title"] for row in reader if row.get("title")]
    if not paths or not texts:
        raise UserError(f"reference data: {'no images under ' + str(train) if not paths else 'no captions in ' + str(captions)}")
    dataset = PathImages(paths, np.full(len(paths), -1, dtype=np.int64), image_size)
    return ReferenceData("imagenet-cc", dataset, texts, source=f"ImageNet train ({len(paths)} images) and Conceptual Captions validation captions ({len(texts)}), as ZSCL")
