"""The eleven MTIL data sets (ten of them in X-TAIL) as they lie under a data root.

Nine come in CoOp's layout (CoOp's DATASETS.md): an image folder and CoOp's fixed split file
`split_zhou_<Name>.json` ({"train"|"val"|"test": [[relative image path, label, class name], ...]}),
except FGVC-Aircraft, whose splits are the data set's own images_variant_{train,test}.txt with
labels from the line order of variants.txt. CIFAR-100 and MNIST come through torchvision's loaders.
Training uses the "train" split and evaluation the "test" split; "val" is not used (as in the
reference code).

A loader takes the classes its split files name, so a root whose split files list fewer classes
(a test fixture) loads as well; the labels stay the data set's own.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cl_bench import UserError, file_sha256

from . import torchvision_sets as tv
from .domains import DataSetTask
from .image_folder import Samples, few_shot_index, first_missing, sha256_lines

# Few-shot draws use numpy's generator seeded with (SHOT_SEED, crc32 of the data set key): fixed
# per data set, whatever the task order or the run seed.
SHOT_SEED = 0


@dataclass(frozen=True)
class Layout:
    key: str
    title: str  # the task name in MTIL / X-TAIL
    folder: str  # under the data root
    images: str  # image folder inside `folder` ("" = `folder` itself)
    split: str  # the split file inside `folder` ("" for the torchvision sets)
    kind: str = "coop"  # coop | aircraft | torchvision
    images_alt: str = ""  # another accepted image folder (torchvision's DTD layout)

    def image_dir(self, root: Path) -> Path:
        base = root / self.folder
        if self.images_alt and not (base / self.images).exists() and (base / self.images_alt).exists():
            return base / self.images_alt
        return base / self.images if self.images else base

    def expected(self, root: Path) -> list[Path]:
        """The files and folders that must exist (checked by existence only)."""
        base = root / self.folder
        if self.kind == "torchvision":
            return [root / f for f in (tv.CIFAR100_FILES if self.key == "cifar100" else tv.MNIST_FILES)]
        if self.kind == "aircraft":
            return [base / "images", *(base / f for f in AIRCRAFT_FILES)]
        image_dirs = [self.image_dir(root)] if self.images else [base / "cars_train", base / "cars_test"]
        return [base / self.split, *image_dirs]

    def describe(self, root: Path) -> str:
        base = f"{root}/{self.folder}"
        if self.key == "cifar100":
            return f"{base}/{{train,test,meta}}, torchvision's CIFAR100 layout"
        if self.key == "mnist":
            return f"{base}/ holding the four unpacked *-ubyte files, torchvision's MNIST layout"
        if self.kind == "aircraft":
            return f"{base}/{{images/,{','.join(AIRCRAFT_FILES)}}}, the data/ folder of fgvc-aircraft-2013b"
        images = self.images or "{cars_train,cars_test}"
        return f"{base}/{images}/ and {base}/{self.split}, CoOp's DATASETS.md layout"


AIRCRAFT_FILES = ("variants.txt", "images_variant_train.txt", "images_variant_test.txt")

LAYOUTS = {
    layout.key: layout
    for layout in (
        Layout("aircraft", "Aircraft", "fgvc_aircraft", "images", "", kind="aircraft"),
        Layout("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
        Layout("cifar100", "CIFAR100", "cifar-100-python", "", "", kind="torchvision"),
        Layout("dtd", "DTD", "dtd", "images", "split_zhou_DescribableTextures.json", images_alt="dtd/images"),
        Layout("eurosat", "EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json"),
        Layout("oxford_flowers", "Flowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
        Layout("food101", "Food", "food-101", "images", "split_zhou_Food101.json"),
        Layout("mnist", "MNIST", "MNIST/raw", "", "", kind="torchvision"),
        Layout("oxford_pets", "OxfordPet", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
        Layout("stanford_cars", "StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
        Layout("sun397", "SUN397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    )
}


@dataclass(frozen=True)
class Source:
    """One data set as read: splits with local labels, and per label its raw name and folder."""

    layout: Layout
    train: Samples
    test: Samples
    raw_names: dict[int, str]  # the class name the split file (or torchvision) gives
    folders: dict[int, str]  # the folder of the class's images relative to the image folder ("" if flat)
    files: dict[str, str]  # split files under the data root -> sha256

    @property
    def labels(self) -> list[int]:
        return sorted(self.raw_names)


def missing(root: Path, keys: list[str], scenario: str) -> str | None:
    """A one-line message naming the first data set of `keys` that is not in place, or None."""
    problems = []
    for key in keys:
        layout = LAYOUTS[key]
        gone = first_missing(layout.expected(root))
        if gone is not None:
            problems.append((layout, gone))
    if not problems:
        return None
    layout, gone = problems[0]
    more = f"; {len(problems) - 1} more data set(s) missing" if len(problems) > 1 else ""
    return f"{scenario}: {layout.title} not found: {gone} is missing (expected {layout.describe(root)}){more}"


def load(root: Path, key: str) -> Source:
    layout = LAYOUTS[key]
    if layout.kind == "torchvision":
        loaded = tv.load_cifar100(root) if key == "cifar100" else tv.load_mnist(root)
        labels = np.union1d(loaded.train.labels, loaded.test.labels).tolist()
        return Source(layout, loaded.train, loaded.test, {c: loaded.classes[c] for c in labels}, {c: "" for c in labels}, loaded.files)
    if layout.kind == "aircraft":
        return _load_aircraft(root, layout)
    return _load_coop(root, layout)


def _load_coop(root: Path, layout: Layout) -> Source:
    split_path = root / layout.folder / layout.split
    image_dir = layout.image_dir(root)
    try:
        split = json.loads(split_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{layout.title}: cannot read the split file {split_path}: {exc}") from exc
    raw_names: dict[int, str] = {}
    folders: dict[int, str] = {}

    def samples(part: str) -> Samples:
        entries = split.get(part) if isinstance(split, dict) else None
        if not isinstance(entries, list):
            raise UserError(f"{layout.title}: {split_path} is not a CoOp split file (no '{part}' list)")
        paths, labels = [], []
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and type(entry[1]) is int and isinstance(entry[2], str)):
                raise UserError(f"{layout.title}: {split_path} has an entry that is not [path, label, class name]: {entry!r}")
            path, label, name = entry
            if raw_names.setdefault(label, name) != name:
                raise UserError(f"{layout.title}: {split_path} gives label {label} two names, {raw_names[label]!r} and {name!r}")
            parent = Path(path).parent.as_posix()
            folders.setdefault(label, "" if parent == "." else parent)
            paths.append(str(image_dir / path))
            labels.append(label)
        return Samples(np.asarray(labels, dtype=np.int64), tuple(paths))

    train, test = samples("train"), samples("test")
    return Source(layout, train, test, raw_names, folders, {f"{layout.folder}/{layout.split}": file_sha256(split_path)})


def _load_aircraft(root: Path, layout: Layout) -> Source:
    base = root / layout.folder
    variants = [line.strip() for line in (base / "variants.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(variants)}
    raw_names: dict[int, str] = {}

    def samples(file: str) -> Samples:
        paths, labels = [], []
        for number, line in enumerate((base / file).read_text(encoding="utf-8").splitlines(), start=1):
            image, _, variant = line.strip().partition(" ")
            if not image:
                continue
            if variant not in index:
                raise UserError(f"Aircraft: {base / file} line {number} names variant {variant!r}, which variants.txt lacks")
            raw_names[index[variant]] = variant
            paths.append(str(base / "images" / f"{image}.jpg"))
            labels.append(index[variant])
        return Samples(np.asarray(labels, dtype=np.int64), tuple(paths))

    train, test = samples("images_variant_train.txt"), samples("images_variant_test.txt")
    files = {f"{layout.folder}/{f}": file_sha256(base / f) for f in AIRCRAFT_FILES}
    return Source(layout, train, test, raw_names, {c: "" for c in raw_names}, files)


def to_task(source: Source, name_of: Callable[[int], str], templates: tuple[str, ...], shots: int) -> DataSetTask:
    """A task of the stream: every class of the source, named by `name_of(label)`, with `shots`
    training images per class (0 = the whole training split); the test split is untouched."""
    layout = source.layout
    train = source.train
    record: dict = {"split_files_sha256": source.files, "test_size": len(source.test)}
    if shots:
        seed = (SHOT_SEED, zlib.crc32(layout.key.encode()))
        index = few_shot_index(train.labels, shots, seed)
        record["few_shot"] = {
            "shots": shots,
            "seed": list(seed),
            "drawn_from": len(train),
            "index_sha256": sha256_lines(str(i) for i in index.tolist()),
        }
        train = train.take(index)
    record["train_size"] = len(train)
    labels = source.labels
    return DataSetTask(layout.key, layout.title, tuple(labels), tuple(name_of(c) for c in labels), tuple(templates), train, source.test, record)


def check_shots(shots: int) -> None:
    if shots < 0:
        raise UserError(f"scenario.shots must be 0 (the whole training split) or a positive count, not {shots}")


def read_tasks(data_root: str, keys: Sequence[str], shots: int, templates: Mapping[str, tuple[str, ...]], name_of: Callable[[Source, int], str]) -> list[DataSetTask]:
    """One task per data set of `keys`, from a data root that the scenario's check found complete."""
    tasks = []
    for key in keys:
        source = load(Path(data_root), key)

        def named(label: int, source: Source = source) -> str:
            return name_of(source, label)

        tasks.append(to_task(source, named, templates[key], shots))
    return tasks
