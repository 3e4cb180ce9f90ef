"""CIFAR-100 and MNIST through torchvision's own loaders (download=False), in their on-disk layout.

- CIFAR-100: <root>/cifar-100-python/{train,test,meta} (the python version of the archive;
  torchvision checks each file's md5, and unpickles them: use files from the official archive).
- MNIST: <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (unpacked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cl_bench import UserError, file_sha256

from .image_folder import Samples, first_missing

CIFAR100_FILES = ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta")
MNIST_FILES = tuple(
    f"MNIST/raw/{name}" for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
)


@dataclass(frozen=True)
class Loaded:
    train: Samples
    test: Samples
    classes: list[str]  # torchvision's class names, index = label
    files: dict[str, str]  # path under the data root -> sha256


def missing_file(root: Path, files: tuple[str, ...]) -> Path | None:
    return first_missing(root / f for f in files)


def _load(root: Path, name: str, files: tuple[str, ...], make) -> Loaded:
    try:
        train, test = make(str(root), True), make(str(root), False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise UserError(f"{name} under {root / Path(files[0]).parent} is incomplete or corrupted ({exc})") from exc
    return Loaded(
        train=Samples(np.asarray(train.targets, dtype=np.int64), array=np.asarray(train.data)),
        test=Samples(np.asarray(test.targets, dtype=np.int64), array=np.asarray(test.data)),
        classes=list(train.classes),
        files={f: file_sha256(root / f) for f in files},
    )


def load_cifar100(root: Path) -> Loaded:
    from torchvision.datasets import CIFAR100

    return _load(root, "CIFAR-100", CIFAR100_FILES, lambda r, train: CIFAR100(r, train=train, download=False))


def load_mnist(root: Path) -> Loaded:
    from torchvision.datasets import MNIST

    return _load(root, "MNIST", MNIST_FILES, lambda r, train: MNIST(r, train=train, download=False))
