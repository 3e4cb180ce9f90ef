"""The embedded streams: structure, disjoint splits, control sets, and the missing-data error."""

import numpy as np
import pytest
import torch

from cl_bench.contracts.specs import resolve_factory
from cl_bench.errors import UserError
from cl_bench.scenarios import embedded, packaged_data


def build(registry, name, **params):
    spec = registry.scenarios()[name]
    return resolve_factory(spec.factory)(spec.resolve(params), None)


def targets(experience):
    return {int(experience.dataset[i][1]) for i in range(len(experience.dataset))}


def test_mtil_stream_structure(registry):
    stream = build(registry, "embedded-mtil")
    assert stream.protocol == "mtil" and stream.task_names == ["letters", "pixelated digits", "faded fashion"]
    assert [len(c) for c in stream.task_classes] == [26, 10, 10]
    assert len(set(stream.class_names)) == len(stream.class_names) == 56
    trained = {c for classes in stream.task_classes for c in classes}
    assert trained.isdisjoint(stream.control_classes[0]) and stream.control_names == ["symbols"]
    for t, classes in enumerate(stream.task_classes):
        assert targets(stream.benchmark.streams["train"][t]) == set(classes) == targets(stream.benchmark.streams["test"][t])
    assert [len(e.dataset) for e in stream.benchmark.streams["train"]] == [26 * 80, 10 * 80, 10 * 300]
    assert stream.test_sizes() == stream.describe()["test_sizes"] == [26 * 40, 10 * 50, 10 * 100]  # what the pooled metrics weigh by
    assert stream.prompts()[0] == ["a photo of a letter A."]


def test_shifted_tasks_are_the_digits_pixelated_and_fashion_faded(registry):
    # What embedded-mtil and embedded-xtail train and test on: the same images as the unshifted
    # domains, pixelated in 4x4 blocks (each block its top-left pixel) and faded to 35 % contrast
    # over grey 80 (rounded), recorded in each split's provenance.
    stream = build(registry, "embedded-mtil")
    digits, fashion = embedded.digits().splits["test"], embedded.fashion().splits["test"]
    pixelated, faded = (stream.benchmark.streams["test"][t].dataset for t in (1, 2))
    image = digits.images[7].astype(np.float32) / 255
    block = image[8:12, 12:16]
    assert np.array_equal(pixelated[7][0][0, 8:12, 12:16].numpy(), np.full((4, 4), image[8, 12], dtype=np.float32))
    assert not np.array_equal(block, np.full((4, 4), image[8, 12]))  # the block did change
    value = int(fashion.images[3, 14, 14])
    assert round(float(faded[3][0][0, 14, 14]) * 255) == int(np.floor(value * 0.35 + 80 + 0.5))
    assert faded[3][0].max() <= (255 * 0.35 + 80) / 255 + 1e-6 and int(faded[3][1]) == int(fashion.labels[3]) + 36
    record = stream.metadata["domains"]
    assert record["pixelated digits"]["test"]["provenance"]["transform"] == "pixelated in 4x4 blocks"
    assert record["faded fashion"]["train"]["provenance"]["transform"] == "faded to 0.35 contrast over grey 80"
    assert "pretrain" not in record["faded fashion"]  # tiny-clip never saw the shifted images
    assert registry.scenarios()["embedded-mtil"].version == registry.scenarios()["embedded-xtail"].version == embedded.SHIFTED_VERSION == "2"


def test_cil_stream_has_no_class_leak_between_tasks(registry):
    stream = build(registry, "embedded-cil")
    assert stream.protocol == "class-il" and [len(c) for c in stream.task_classes] == [2] * 5
    assert [c for classes in stream.task_classes for c in classes] == list(embedded.CIL_CLASS_ORDER)
    assert stream.test_sizes() == [2 * embedded.FASHION_TEST_PER_CLASS] * 5
    for t, classes in enumerate(stream.task_classes):
        assert targets(stream.benchmark.streams["train"][t]) == set(classes)
        assert targets(stream.benchmark.streams["test"][t]) == set(classes)
    assert build(registry, "embedded-cil", tasks=2).num_tasks == 2 == registry.scenarios()["embedded-cil"].task_count({"tasks": 2})
    with pytest.raises(UserError, match="must divide"):
        registry.scenarios()["embedded-cil"].resolve({"tasks": 3})


def test_dil_domains_share_one_label_space_and_differ_in_images(registry):
    stream = build(registry, "embedded-dil")
    assert stream.protocol == "domain-il" and stream.task_names == ["handwritten", "printed", "rotated"]
    assert stream.task_classes == [list(range(10))] * 3 and stream.class_names[:10] == list(packaged_data.DIGIT_CLASSES)
    for t in range(3):
        assert targets(stream.benchmark.streams["train"][t]) == set(range(10)) == targets(stream.benchmark.streams["test"][t])
        assert stream.label_space(0, t) == stream.label_space(3, t) == list(range(10))
    handwritten, printed, rotated = (stream.benchmark.streams["test"][t].dataset for t in range(3))
    first = handwritten[0][0]
    assert torch.equal(rotated[0][0], torch.rot90(first, 1, dims=(1, 2)))  # the same digit, a quarter turn
    assert not torch.equal(printed[0][0], first)
    assert registry.scenarios()["embedded-dil"].check_data is None  # needs no Fashion-MNIST


def test_xtail_trains_on_few_shots_and_scores_over_the_union(registry):
    stream = build(registry, "embedded-xtail")
    assert stream.protocol == "x-tail" and stream.task_names == ["letters", "pixelated digits", "faded fashion"]
    union = list(range(46))
    assert len(set(stream.class_names[:46])) == 46 and sorted(c for t in stream.task_classes for c in t) == union
    for t, classes in enumerate(stream.task_classes):
        train_targets = [int(stream.benchmark.streams["train"][t].dataset[i][1]) for i in range(len(stream.benchmark.streams["train"][t].dataset))]
        assert sorted(set(train_targets)) == classes and all(train_targets.count(c) == 16 for c in classes)
        assert stream.label_space(0, t) == stream.label_space(t + 1, t) == union  # no task id, every domain's classes
    full_test = build(registry, "embedded-mtil").benchmark.streams["test"]
    assert [len(e.dataset) for e in stream.benchmark.streams["test"]] == [len(e.dataset) for e in full_test]  # test untouched
    assert stream.metadata["shots"] == 16 and stream.metadata["domains"]["letters"]["train"]["size"] == 26 * 16
    again = build(registry, "embedded-xtail")  # the shots are a fixed draw, not the run seed's
    assert stream.metadata["domains"]["pixelated digits"]["train"]["sha256"] == again.metadata["domains"]["pixelated digits"]["train"]["sha256"]
    assert len(build(registry, "embedded-xtail", shots=0).benchmark.streams["train"][0].dataset) == 26 * 80
    with pytest.raises(UserError, match="exceeds the 80 training images per class of letters"):
        build(registry, "embedded-xtail", shots=81)


def test_bad_parameters_are_refused_before_any_data_loads(registry, monkeypatch, tmp_path):
    from cl_bench import RunConfig, run

    def no_data():
        raise AssertionError("data loaded before the parameters were checked")

    for domain in ("fashion", "digits", "letters", "symbols"):
        monkeypatch.setattr(embedded, domain, no_data)
    for name, params, message in (
        ("embedded-cil", {"tasks": 3}, "embedded-cil must divide its 10 classes"),
        ("embedded-cil", {"tasks": 0}, "embedded-cil must divide"),
        ("embedded-xtail", {"shots": -1}, "scenario.shots must be 0"),
        ("embedded-xtail", {"shots": 301}, "exceeds the 80 training images per class of letters"),
    ):
        with pytest.raises(UserError, match=message):
            run(RunConfig(method="zeroshot", scenario=name, scenario_params=params, out=str(tmp_path / "runs"), progress=False))
    assert not (tmp_path / "runs").exists()
    assert embedded.TRAIN_PER_CLASS == {"letters": 80, "digits": 80, "fashion": 300}  # the splits' sizes, without loading them


def test_the_xtail_shot_limit_is_the_smallest_training_class_of_each_domain():
    for name, per_class in embedded.TRAIN_PER_CLASS.items():
        assert int(np.bincount(getattr(embedded, name)().splits["train"].labels).min()) == per_class, name


def test_per_class_splits_are_disjoint_and_exact():
    labels = np.repeat(np.arange(4), 30)
    splits = packaged_data.per_class_splits(labels, {"a": 5, "b": 10, "c": 15}, seed=0)
    joined = np.concatenate(list(splits.values()))
    assert len(joined) == len(set(joined.tolist())) == 120
    for name, size in (("a", 5), ("b", 10), ("c", 15)):
        assert np.bincount(labels[splits[name]]).tolist() == [size] * 4
    with pytest.raises(ValueError):
        packaged_data.per_class_splits(labels, {"a": 31}, seed=0)


def test_splits_of_every_domain_share_no_image():
    for domain in (embedded.fashion(), embedded.digits(), embedded.letters(), embedded.symbols(), embedded.printed_digits(), embedded.rotated_digits()):
        seen: dict[bytes, str] = {}
        for split, images in domain.splits.items():
            for image in images.images:
                key = image.tobytes()
                assert seen.setdefault(key, split) == split, f"{domain.name}: an image is in {seen[key]} and {split}"


def test_control_classes_are_never_trained_by_any_embedded_stream(registry):
    for name in ("embedded-mtil", "embedded-cil", "embedded-dil", "embedded-xtail"):
        stream = build(registry, name)
        control_names = {stream.class_names[c] for c in stream.control_classes[0]}
        trained_names = {stream.class_names[c] for classes in stream.task_classes for c in classes}
        assert control_names.isdisjoint(trained_names)
        assert control_names <= set(embedded.pretraining_data()["symbols"].class_names)


def test_images_are_28x28_in_unit_range(registry):
    stream = build(registry, "embedded-mtil")
    x, _ = stream.benchmark.streams["test"][2].dataset[0][:2]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0


def test_missing_fashion_mnist_names_the_path_and_the_package(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("CL_BENCH_FASHION_MNIST", str(tmp_path))
    embedded.fashion.cache_clear()
    try:
        problem = registry.scenarios()["embedded-mtil"].check_data(None)
        assert str(tmp_path) in problem and "dataset-fashion-mnist" in problem
        with pytest.raises(UserError, match="dataset-fashion-mnist"):
            packaged_data.load_fashion_mnist("train")
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
        for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            (tmp_path / name).write_bytes(b"")
        with pytest.raises(UserError, match="cannot read Fashion-MNIST"):
            packaged_data.load_fashion_mnist("train")
    finally:
        embedded.fashion.cache_clear()


def test_ls_counts_each_scenarios_tasks_under_the_given_values(capsys):
    from cl_bench.cli import main

    def rows(*settings: str) -> dict[str, list[str]]:
        assert main(["ls", *[f"--set={s}" for s in settings]]) == 0
        return {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("embedded-")}

    assert rows()["embedded-cil"][2:4] == ["5", "tasks"]
    listed = rows("scenario.tasks=2")
    assert listed["embedded-cil"][2:4] == ["2", "tasks"] and listed["embedded-mtil"][2:4] == ["3", "tasks"]  # no such parameter: its own count
    # A value one scenario refuses marks its row with why; the others are still listed.
    refused = rows("scenario.tasks=3")["embedded-cil"]
    assert refused[2] == "invalid" and " ".join(refused[5:]) == "scenario.tasks for embedded-cil must divide its 10 classes: 1, 2, 5 or 10"
