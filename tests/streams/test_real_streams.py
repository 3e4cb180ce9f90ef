"""The real-data streams (split-cifar100, imagenet-r, domainnet, mtil, xtail) on tiny fake roots.

The fixture writes one data root in every data set's on-disk layout: CoOp-style folders with
`split_zhou_*.json` files naming a few real classes each, FGVC-Aircraft's variant files,
DomainNet's split files, ImageNet-R's 200 WordNet-id folders, and torchvision's CIFAR-100 and
MNIST files. Images are a few pixels each; no real data set is needed.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cl_bench import Backbone, Method, ScenarioContext, StreamTask, assemble_stream
from cl_bench.cli import main
from cl_bench.contracts.params import TRAIN_DEFAULTS
from cl_bench.contracts.specs import resolve_factory
from cl_bench.contracts.stream import Stream, classification_dataset
from cl_bench.errors import UserError
from cl_bench.scenarios import class_il_data, coop_names
from cl_bench.scenarios.image_folder import square_crop

SIZE = 16  # image size the fake backbone asks for
TRAIN, TEST = 6, 2  # images per class in the CoOp-style fakes

# (image path relative to the image folder without the file name, label, class name in the split file)
COOP_CLASSES = {
    ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"): [
        ("Faces", 0, "face"),
        ("pagoda", 68, "pagoda"),
        ("pizza", 71, "pizza"),
        ("sunflower", 89, "sunflower"),
    ],
    ("dtd", "images", "split_zhou_DescribableTextures.json"): [("banded", 0, "banded"), ("zigzagged", 46, "zigzagged")],
    ("eurosat", "2750", "split_zhou_EuroSAT.json"): [("AnnualCrop", 0, "Annual Crop Land"), ("SeaLake", 9, "Sea or Lake")],
    ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"): [("", 0, "pink primrose"), ("", 53, "sunflower")],
    ("food-101", "images", "split_zhou_Food101.json"): [("apple_pie", 0, "apple_pie"), ("pizza", 76, "pizza")],
    ("oxford_pets", "images", "split_zhou_OxfordPets.json"): [("", 0, "abyssinian"), ("", 1, "american_bulldog")],
    ("stanford_cars", "", "split_zhou_StanfordCars.json"): [("", 0, "2000 AM General Hummer SUV"), ("", 195, "2012 smart fortwo Convertible")],
    ("sun397", "SUN397", "split_zhou_SUN397.json"): [("a/abbey", 0, "abbey"), ("c/church/indoor", 87, "indoor church"), ("p/pagoda", 245, "pagoda")],
}
AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Falcon 2000"]
DOMAINNET_CLASSES = ["aircraft_carrier", "airplane", "alarm_clock"]
CIFAR_NAMES = [f"thing_{i:02d}" for i in range(100)]


def _image(path: Path, seed: int, size=(12, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _coop(root: Path, folder: str, images: str, split_file: str, classes) -> None:
    split = {"train": [], "val": [], "test": []}
    counter = 0
    for sub, label, name in classes:
        for part, count in (("train", TRAIN), ("val", 1), ("test", TEST)):
            for _ in range(count):
                counter += 1
                if folder == "stanford_cars":
                    rel = f"cars_{'test' if part == 'test' else 'train'}/{counter:05d}.jpg"
                elif folder == "oxford_pets":
                    rel = f"{name}_{counter}.jpg"
                elif folder == "oxford_flowers":
                    rel = f"image_{counter:05d}.jpg"
                else:
                    rel = f"{sub}/img_{counter:04d}.jpg"
                _image(root / folder / images / rel, counter)
                split[part].append([rel, label, name])
    (root / folder / split_file).write_text(json.dumps(split))


def _aircraft(root: Path) -> None:
    base = root / "fgvc_aircraft"
    base.mkdir(parents=True)
    (base / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    number = 1000
    for part, count in (("train", TRAIN), ("val", 1), ("test", TEST)):
        lines = []
        for variant in AIRCRAFT_VARIANTS:
            for _ in range(count):
                number += 1
                _image(base / "images" / f"{number:07d}.jpg", number)
                lines.append(f"{number:07d} {variant}")
        (base / f"images_variant_{part}.txt").write_text("\n".join(lines) + "\n")


def _idx(path: Path, array: np.ndarray, magic: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = np.asarray([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", 3), ("t10k", 1)):
        labels = np.repeat(np.arange(10), per_class)
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (len(labels), 28, 28)), 2051)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)


def _cifar(root: Path) -> dict[str, str]:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, per_class in (("train", 2), ("test", 1)):
        labels = np.repeat(np.arange(100), per_class).tolist()
        data = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        (base / name).write_bytes(pickle.dumps({"data": data, "fine_labels": labels}))
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": CIFAR_NAMES}))
    return {name: hashlib.md5((base / name).read_bytes()).hexdigest() for name in ("train", "test", "meta")}


def _domainnet(root: Path) -> None:
    base = root / "domainnet"
    number = 0
    for domain in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"):
        for part, count in (("train", 2), ("test", 1)):
            lines = []
            for label, name in enumerate(DOMAINNET_CLASSES):
                for _ in range(count):
                    number += 1
                    rel = f"{domain}/{name}/{domain}_{number:06d}.jpg"
                    _image(base / rel, number)
                    lines.append(f"{rel} {label}")
            (base / f"{domain}_{part}.txt").write_text("\n".join(lines) + "\n")


def _imagenet_r(root: Path) -> None:
    for part in ("train", "test"):
        for i in range(200):
            _image(root / "imagenet-r" / part / f"n{i:08d}" / f"{part}_{i}.png", i, size=(6, 6))


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for (folder, images, split_file), classes in COOP_CLASSES.items():
        _coop(root, folder, images, split_file, classes)
    _aircraft(root)
    _mnist(root)
    md5 = _cifar(root)
    _domainnet(root)
    _imagenet_r(root)
    return root, md5


@pytest.fixture
def root(fake_root, monkeypatch):
    """The fake root, with torchvision told the md5 sums of the fake CIFAR-100 files."""
    from torchvision.datasets import CIFAR100

    path, md5 = fake_root
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": md5["meta"]})
    return path


def build(registry, name, root, **params) -> Stream:
    spec = registry.scenarios()[name]
    return resolve_factory(spec.factory)(spec.resolve(params), ScenarioContext(str(root), SIZE))


def targets(dataset) -> list[int]:
    return [int(t) for t in dataset.targets]


def split_targets(stream: Stream, split: str) -> list[list[int]]:
    return [targets(e.dataset) for e in stream.benchmark.streams[split]]


# ------------------------------------------------------------------------------------ images


def test_images_are_resized_on_the_shorter_side_and_centre_cropped():
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, :10] = 255  # a white left third: the centre crop must cut it away
    out = square_crop(Image.fromarray(wide), 10)
    assert out.shape == (3, 10, 10) and out.dtype == torch.uint8
    assert int(out.max()) < 40
    grey = square_crop(Image.fromarray(np.full((5, 7), 128, dtype=np.uint8)), 16)  # one channel in, RGB out
    assert grey.shape == (3, 16, 16) and int(grey.float().mean()) == 128


# ------------------------------------------------------------------------------------ class-IL


def test_split_cifar100_tasks_follow_the_fixed_order_without_leaks(registry, root):
    stream = build(registry, "split-cifar100", root)
    assert stream.protocol == "class-il" and stream.num_tasks == 10
    assert [len(c) for c in stream.task_classes] == [10] * 10
    assert [c for classes in stream.task_classes for c in classes] == list(class_il_data.CIFAR100_ORDER)
    assert stream.task_classes[0][:3] == [87, 0, 52]
    for split in ("train", "test"):
        seen: set[int] = set()
        for classes, found in zip(stream.task_classes, split_targets(stream, split)):
            assert set(found) == set(classes) and seen.isdisjoint(found)
            seen |= set(found)
    assert stream.class_names[87] == "thing_87" and stream.prompts()[87] == ["a bad photo of a thing_87."]
    assert stream.label_space(0, 2) == sorted(c for t in stream.task_classes[:3] for c in t)
    files = stream.metadata["split_files_sha256"]
    assert files["cifar-100-python/train"] == hashlib.sha256((root / "cifar-100-python" / "train").read_bytes()).hexdigest()
    image, target = stream.benchmark.streams["train"][0].dataset[0][:2]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8 and int(target) in stream.task_classes[0]
    assert [len(c) for c in build(registry, "split-cifar100", root, tasks=20).task_classes] == [5] * 20
    assert build(registry, "split-cifar100", root, tasks=5).num_tasks == 5
    with pytest.raises(UserError, match="must divide its 100 classes"):
        build(registry, "split-cifar100", root, tasks=7)
    json.dumps(stream.describe())


def test_the_spec_counts_the_tasks_its_built_stream_has(registry, root):
    cases = {"split-cifar100": [{}, {"tasks": 20}], "imagenet-r": [{"tasks": 40}], "embedded-cil": [{}, {"tasks": 10}], "domainnet": [{}], "mtil": [{}], "xtail": [{}]}
    for name, settings in cases.items():
        spec = registry.scenarios()[name]
        assert ("tasks" in spec.defaults) == (spec.count_tasks is not None), name  # every tasks parameter is counted
        for given in settings:
            assert spec.task_count(spec.resolve(given)) == build(registry, name, root, **given).num_tasks, (name, given)


def test_imagenet_r_uses_the_seed_1993_order_over_sorted_wnids(registry, root):
    assert list(class_il_data.IMAGENET_R_ORDER) == np.random.RandomState(1993).permutation(200).tolist()
    stream = build(registry, "imagenet-r", root)
    assert stream.num_tasks == 10 and [len(c) for c in stream.task_classes] == [20] * 10
    assert stream.task_classes[0][:3] == [168, 136, 51]
    assert split_targets(stream, "train") == [sorted(c) for c in stream.task_classes]  # one image per class here
    assert stream.class_names[1] == "great_white_shark" and len(stream.prompts()[1]) == 7
    assert stream.metadata["wnids"][0] == "n00000000"
    assert set(stream.metadata["split_files_sha256"]) == {"imagenet-r/train (file list)", "imagenet-r/test (file list)"}


# ------------------------------------------------------------------------------------ domain-IL


def test_domainnet_domains_share_one_label_space(registry, root):
    stream = build(registry, "domainnet", root)
    assert stream.protocol == "domain-il" and stream.task_names == ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
    assert stream.task_classes == [[0, 1, 2]] * 6 and stream.class_names == ["aircraft carrier", "airplane", "alarm clock"]
    for t in range(6):
        assert stream.label_space(0, t) == stream.label_space(6, t) == [0, 1, 2]
    assert [sorted(set(t)) for t in split_targets(stream, "test")] == [[0, 1, 2]] * 6
    paths = stream.benchmark.streams["train"][2].dataset
    assert len(paths) == 6
    sha = stream.metadata["split_files_sha256"]["domainnet/sketch_test.txt"]
    assert sha == hashlib.sha256((root / "domainnet" / "sketch_test.txt").read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ MTIL


def test_mtil_order_one_with_zscl_names_and_templates(registry, root):
    stream = build(registry, "mtil", root)
    assert stream.protocol == "mtil"
    assert stream.task_names == ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers", "Food", "MNIST", "OxfordPet", "StanfordCars", "SUN397"]
    assert [len(c) for c in stream.task_classes] == [3, 4, 100, 2, 2, 2, 2, 10, 2, 2, 3]
    names = dict(zip(stream.class_names, range(len(stream.class_names))))
    for name in ("off-center face", "lake or sea", "apple pie", "American Bulldog", "AM General Hummer SUV 2000", "church/indoor", "0 - zero", "thing 05"):
        assert name in names, name
    # Names in two data sets carry their data set's title; their prompts stay ZSCL's.
    assert {"sunflower (Caltech101)", "sunflower (Flowers)", "pizza (Caltech101)", "pizza (Food)", "pagoda (SUN397)"} <= set(names)
    prompts = stream.prompts()
    assert prompts[names["sunflower (Flowers)"]] == ["a photo of a sunflower, a type of flower."]
    assert len(prompts[names["off-center face"]]) == 34 and prompts[names["off-center face"]][0] == "a photo of a off-center face."
    assert prompts[names["0 - zero"]] == ['a photo of the number: "0 - zero".']
    for t, classes in enumerate(stream.task_classes):
        assert stream.label_space(0, t) == stream.label_space(11, t) == sorted(classes)  # task-aware
    assert [len(t) for t in split_targets(stream, "train")][:2] == [3 * TRAIN, 4 * TRAIN]
    sha = stream.metadata["data_sets"]["SUN397"]["split_files_sha256"]["sun397/split_zhou_SUN397.json"]
    assert sha == hashlib.sha256((root / "sun397" / "split_zhou_SUN397.json").read_bytes()).hexdigest()
    assert stream.metadata["data_sets"]["Aircraft"]["split_files_sha256"].keys() == {
        "fgvc_aircraft/variants.txt",
        "fgvc_aircraft/images_variant_train.txt",
        "fgvc_aircraft/images_variant_test.txt",
    }
    assert set(stream.metadata["data_sets"]["MNIST"]["split_files_sha256"]) == {
        "MNIST/raw/train-images-idx3-ubyte",
        "MNIST/raw/train-labels-idx1-ubyte",
        "MNIST/raw/t10k-images-idx3-ubyte",
        "MNIST/raw/t10k-labels-idx1-ubyte",
    }
    json.dumps(stream.describe())


def test_mtil_order_two_and_few_shot(registry, root):
    full = build(registry, "mtil", root, order="II")
    assert full.task_names == ["StanfordCars", "Food", "MNIST", "OxfordPet", "Flowers", "SUN397", "Aircraft", "Caltech101", "DTD", "EuroSAT", "CIFAR100"]
    few = build(registry, "mtil", root, order="ii", shots=5)
    assert few.params["order"] == "II" and few.metadata["shots"] == 5
    for t in range(few.num_tasks):
        train = Counter(split_targets(few, "train")[t])
        assert set(train) == set(few.task_classes[t]) and set(train.values()) == {5}
    assert split_targets(few, "test") == split_targets(full, "test")  # test untouched
    caltech = few.benchmark.streams["train"][7].dataset  # 6 images per class: five distinct ones drawn
    assert len(caltech) == 4 * 5 and len({caltech[i][0].numpy().tobytes() for i in range(len(caltech))}) == 20
    again = build(registry, "mtil", root, order="II", shots=5)  # a fixed draw, whatever the run
    assert again.metadata["data_sets"]["Caltech101"]["few_shot"] == few.metadata["data_sets"]["Caltech101"]["few_shot"]
    with pytest.raises(UserError, match="I or II"):
        build(registry, "mtil", root, order="III")


# ------------------------------------------------------------------------------------ X-TAIL


def test_xtail_union_label_space_unique_names_and_16_shots(registry, root):
    stream = build(registry, "xtail", root)
    assert stream.protocol == "x-tail" and stream.num_tasks == 10 and "CIFAR100" not in stream.task_names
    assert stream.task_names[0] == "Aircraft" and stream.task_names[-1] == "SUN397"
    union = list(range(len(stream.class_names)))
    assert sorted(c for t in stream.task_classes for c in t) == union and len(set(stream.class_names)) == len(union)
    for row in (0, 5, 10):
        for t in range(10):
            assert stream.label_space(row, t) == union
    names = {n: i for i, n in enumerate(stream.class_names)}
    prompts = stream.prompts()
    # X-TAIL keeps the split file's names; duplicates are bracketed but keep the reference prompt...
    assert prompts[names["pizza (Food)"]] == ["a photo of a pizza, a type of food."]
    assert prompts[names["pizza (Caltech101)"]] == ["a photo of a pizza."]
    assert prompts[names["apple_pie"]] == ["a photo of a apple_pie, a type of food."]
    assert prompts[names["Annual Crop Land satellite location"]] == ["a centered satellite photo of the Annual Crop Land satellite location."]
    assert prompts[names['number: "0 - zero"']] == ['a photo of the number: "number: "0 - zero"".']
    # ...unless two data sets would give the very same prompt: then the bracketed name is the prompt's.
    assert prompts[names["pagoda (Caltech101)"]] == ["a photo of a pagoda (Caltech101)."]
    assert prompts[names["pagoda (SUN397)"]] == ["a photo of a pagoda (SUN397)."]
    all_prompts = [p for class_prompts in prompts for p in class_prompts]
    assert len(all_prompts) == len(set(all_prompts))
    full_test = build(registry, "mtil", root).benchmark.streams["test"]
    mtil_sizes = {n: len(e.dataset) for n, e in zip(build(registry, "mtil", root).task_names, full_test)}
    for t, classes in enumerate(stream.task_classes):
        train = Counter(split_targets(stream, "train")[t])
        assert set(train) == set(classes) and set(train.values()) == {16}  # fewer than 16 images: drawn with replacement
        assert len(stream.benchmark.streams["test"][t].dataset) == mtil_sizes[stream.task_names[t]]
    assert stream.metadata["data_sets"]["DTD"]["few_shot"]["shots"] == 16
    assert len(build(registry, "xtail", root, shots=0).benchmark.streams["train"][1].dataset) == 4 * TRAIN
    json.dumps(stream.describe())


class _Idle(Method):
    pass


class _ConfusedModel(Backbone):
    """Right within each task, but class 0's images score higher on class 2 (another domain).

    Not a CLIP: it implements only the model contract, which is all the strategy and the
    accuracy matrix use.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.space = torch.arange(num_classes)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def set_task_context(self, context) -> None:
        self.space = torch.as_tensor(list(context.label_space))

    def forward(self, images):
        truth = images[:, 0, 0, 0].round().long()
        logits = torch.zeros(len(images), self.num_classes)
        logits[torch.arange(len(images)), truth] = 1.0
        logits[truth == 0, 2] = 2.0
        masked = torch.full_like(logits, float("-inf"))
        masked[:, self.space] = logits[:, self.space]
        return masked + 0.0 * self.anchor


def _two_domain_stream(protocol: str) -> Stream:
    targets_ = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    images = targets_.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    tasks = [[0, 1], [2, 3]]
    data = [classification_dataset(images[torch.isin(targets_, torch.tensor(c))], targets_[torch.isin(targets_, torch.tensor(c))]) for c in tasks]
    records = [StreamTask(name, classes, train=d, test=d) for name, classes, d in zip(("alpha", "beta"), tasks, data)]
    return assemble_stream(f"two-{protocol}", "1", protocol, records, class_names=["a0", "a1", "b0", "b1"], preload=True)


@pytest.mark.parametrize("protocol, expected", [("x-tail", [50.0, 100.0]), ("mtil", [100.0, 100.0])])
def test_xtail_scores_over_the_union_so_cross_domain_confusion_costs(protocol, expected):
    from cl_bench.running.evaluation import AccuracyMatrix, evaluate_row
    from cl_bench.running.strategy import ClStrategy

    stream = _two_domain_stream(protocol)
    plugin = AccuracyMatrix(stream)
    model = _ConfusedModel(4)
    strategy = ClStrategy(model=model, method=_Idle(), stream=stream, hparams=dict(TRAIN_DEFAULTS), plugins=[plugin], progress=False)
    acc, _ = evaluate_row(strategy, plugin, 2)
    assert acc == expected


# ------------------------------------------------------------------------------------ missing data


def test_check_data_is_none_on_a_complete_root_and_names_the_missing_piece(registry, root, tmp_path):
    for name in ("split-cifar100", "imagenet-r", "domainnet", "mtil", "xtail"):
        assert registry.scenarios()[name].check_data(str(root)) is None, name
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "sun397").symlink_to(root / "sun397")
    message = registry.scenarios()["xtail"].check_data(str(partial))
    assert message.startswith("xtail: Aircraft not found") and "8 more" in message and "\n" not in message
    assert str(partial / "fgvc_aircraft") in message
    message = registry.scenarios()["mtil"].check_data(str(root / "nowhere"))
    assert "fgvc_aircraft" in message and "10 more" in message


def test_dtd_in_torchvision_layout_is_accepted(registry, root, tmp_path):
    from cl_bench.scenarios import coop_data

    alt = tmp_path / "alt"
    (alt / "dtd" / "dtd").mkdir(parents=True)
    (alt / "dtd" / "dtd" / "images").symlink_to(root / "dtd" / "images")
    (alt / "dtd" / "split_zhou_DescribableTextures.json").symlink_to(root / "dtd" / "split_zhou_DescribableTextures.json")
    assert coop_data.missing(alt, ["dtd"], "mtil") is None
    source = coop_data.load(alt, "dtd")
    assert source.train.paths[0].startswith(str(alt / "dtd" / "dtd" / "images"))


@pytest.mark.parametrize(
    "scenario, expected",
    [
        ("split-cifar100", "cifar-100-python"),
        ("imagenet-r", "imagenet-r"),
        ("domainnet", "domainnet"),
        ("mtil", "fgvc_aircraft"),
        ("xtail", "fgvc_aircraft"),
    ],
)
def test_run_with_a_missing_root_is_a_one_line_error(scenario, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CL_BENCH_DATA", raising=False)
    missing = tmp_path / "missing"
    code = main(["run", "--scenario", scenario, "--method", "zeroshot", "--data-root", str(missing), "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith(f"clbench: error: {scenario}") and str(missing / expected) in err
    code = main(["run", "--scenario", scenario, "--method", "zeroshot", "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--data-root" in err and "CL_BENCH_DATA" in err


def test_names_tables_match_their_sources():
    assert len(coop_names.CALTECH101_BY_FOLDER) == 101 and len(coop_names.FLOWERS_BY_LABEL) == 102
    assert len(set(coop_names.FLOWERS_BY_LABEL)) == 102 and len(class_il_data.IMAGENET_R_NAMES) == 200
    assert sorted(class_il_data.CIFAR100_ORDER) == list(range(100))
    assert coop_names.MTIL_ORDERS["II"][0] == "stanford_cars" and set(coop_names.MTIL_ORDERS["I"]) == set(coop_names.MTIL_ORDERS["II"])
    assert set(coop_names.XTAIL_ORDER) == set(coop_names.MTIL_ORDERS["I"]) - {"cifar100"}


def test_ls_shows_protocol_task_count_and_presence_of_each_real_stream(root, tmp_path, capsys, monkeypatch):
    expected = {"split-cifar100": ("class-il", 10), "imagenet-r": ("class-il", 10), "domainnet": ("domain-il", 6), "mtil": ("mtil", 11), "xtail": ("x-tail", 10)}

    def rows() -> dict[str, list[str]]:
        assert main(["ls"]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in expected}

    monkeypatch.setenv("CL_BENCH_DATA", str(root))
    listed = rows()
    assert set(listed) == set(expected)
    for name, row in listed.items():
        assert row[1:4] == [expected[name][0], str(expected[name][1]), "tasks"] and row[4:6] == ["data:", "present"], row
    monkeypatch.setenv("CL_BENCH_DATA", str(tmp_path / "empty"))
    assert {name: row[5] for name, row in rows().items()} == dict.fromkeys(expected, "MISSING")


@pytest.mark.parametrize("name", ["mtil", "xtail"])
def test_mtil_and_xtail_read_zscl_reference_data_from_the_root_only_when_asked(registry, root, name):
    stream = build(registry, name, root)  # the fake root has no ImageNet: building does not look
    with pytest.raises(UserError, match="reference data missing") as info:
        stream.reference()
    assert "ImageNet" in str(info.value) and "\n" not in str(info.value)
