"""Reading real images lazily, as the scenario plugins of real data sets need it.

Images are decoded one at a time when a loader asks for them (nothing is preloaded), converted
to RGB, resized so that the shorter side is the backbone's image size (bicubic) and centre-cropped,
as CLIP's own preprocessing does; they come out as uint8 CHW tensors. There is no training
augmentation: every pass sees the same pixels, so runs stay deterministic.

`Samples` holds what a split lists (image paths or an in-memory array from a torchvision loader,
plus data-set-local labels); `Samples.dataset` turns it into an Avalanche dataset whose targets are
the stream's global class ids.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench import UserError

# The extensions torchvision's ImageFolder accepts, so a folder layout reads the same here.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def square_crop(image, size: int):
    """A PIL image as a uint8 (3, size, size) tensor: shorter side to `size` (bicubic), centre crop."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = TF.resize(image.convert("RGB"), size, interpolation=InterpolationMode.BICUBIC)
    return TF.pil_to_tensor(TF.center_crop(image, size))


class PathImages:
    """Images read from files when indexed; `targets` is what Avalanche reads."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int] | np.ndarray, size: int) -> None:
        import torch

        self.paths = list(paths)
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return square_crop(image, self.size), self.targets[index]
        except OSError as exc:  # a file the split lists but the disk lacks or cannot decode
            raise UserError(f"cannot read image {path}: {exc}") from exc


class ArrayImages:
    """Images from a uint8 array (N, H, W) or (N, H, W, 3), as torchvision's MNIST and CIFAR hold them."""

    def __init__(self, array: np.ndarray, targets: Sequence[int] | np.ndarray, size: int) -> None:
        import torch

        self.array = array
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        self.size = size

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int):
        from PIL import Image

        return square_crop(Image.fromarray(np.asarray(self.array[index])), self.size), self.targets[index]


@dataclass(frozen=True)
class Samples:
    """The images of one split: `paths` (files) or `array` (in memory), and data-set-local labels."""

    labels: np.ndarray
    paths: tuple[str, ...] | None = None
    array: Any = None  # numpy array, indexed lazily

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> Samples:
        index = np.asarray(index, dtype=np.int64)
        paths = tuple(self.paths[i] for i in index) if self.paths is not None else None
        array = _LazyRows(self.array, index) if self.array is not None else None
        return Samples(self.labels[index], paths, array)

    def where(self, classes: Iterable[int]) -> Samples:
        return self.take(np.flatnonzero(np.isin(self.labels, np.asarray(list(classes), dtype=np.int64))))

    def dataset(self, size: int, to_global: dict[int, int] | None = None):
        """An Avalanche classification dataset; `to_global` maps local labels to stream class ids."""
        from avalanche.benchmarks.utils import as_classification_dataset

        targets = self.labels if to_global is None else np.asarray([to_global[int(c)] for c in self.labels], dtype=np.int64)
        if self.paths is not None:
            return as_classification_dataset(PathImages(self.paths, targets, size))
        return as_classification_dataset(ArrayImages(self.array, targets, size))


class _LazyRows:
    """Rows of an array chosen by index, read one at a time (no copy of the whole subset)."""

    def __init__(self, base: Any, index: np.ndarray) -> None:
        self.base, self.index = base, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.base[int(self.index[i])]


def few_shot_index(labels: np.ndarray, shots: int, seed: Sequence[int]) -> np.ndarray:
    """`shots` indices per class from a fixed generator (the run seed never changes them).

    A class with fewer images than `shots` is drawn with replacement, as the X-TAIL reference
    code does, so that every class has exactly `shots` training images.
    """
    rng = np.random.default_rng(list(seed))
    picks = []
    for cls in np.unique(labels):
        pool = np.flatnonzero(labels == cls)
        picks.append(np.sort(rng.choice(pool, size=shots, replace=len(pool) < shots)))
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def sha256_lines(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def image_folder(root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """An ImageFolder-style tree: sorted class folders, image paths (sorted within a class), labels."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(entry.name for entry in os.scandir(root / name) if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        paths.extend(str(root / name / f) for f in files)
        labels.extend([label] * len(files))
    return classes, paths, np.asarray(labels, dtype=np.int64)


def first_missing(paths: Iterable[Path]) -> Path | None:
    """The first path that does not exist (checking existence only: cheap enough for `clbench ls`)."""
    for path in paths:
        if not path.exists():
            return path
    return None


def no_root_message(scenario: str, what: str) -> str:
    return f"{scenario} needs {what} under a data root: pass --data-root DIR or set CL_BENCH_DATA"
