"""The embedded streams: structure, disjoint splits, control sets, and the missing-data error."""

import numpy as np
import pytest
import torch

from cl_bench.errors import UserError
from cl_bench.scenarios import embedded, packaged_data
from cl_bench.spec import resolve_factory


def build(registry, name, **params):
    spec = registry.scenarios()[name]
    return resolve_factory(spec.factory)(spec.resolve(params), None)


def targets(experience):
    return {int(experience.dataset[i][1]) for i in range(len(experience.dataset))}


def test_mtil_stream_structure(registry):
    stream = build(registry, "embedded-mtil")
    assert stream.protocol == "mtil" and stream.task_names == ["letters", "digits", "fashion"]
    assert [len(c) for c in stream.task_classes] == [26, 10, 10]
    assert len(set(stream.class_names)) == len(stream.class_names) == 56
    trained = {c for classes in stream.task_classes for c in classes}
    assert trained.isdisjoint(stream.control_classes[0]) and stream.control_names == ["symbols"]
    for t, classes in enumerate(stream.task_classes):
        assert targets(stream.benchmark.streams["train"][t]) == set(classes) == targets(stream.benchmark.streams["test"][t])
    assert [len(e.dataset) for e in stream.benchmark.streams["train"]] == [26 * 80, 10 * 80, 10 * 300]
    assert stream.prompts()[0] == ["a photo of a letter A."]


def test_cil_stream_has_no_class_leak_between_tasks(registry):
    stream = build(registry, "embedded-cil")
    assert stream.protocol == "class-il" and [len(c) for c in stream.task_classes] == [2] * 5
    assert [c for classes in stream.task_classes for c in classes] == list(embedded.CIL_CLASS_ORDER)
    for t, classes in enumerate(stream.task_classes):
        assert targets(stream.benchmark.streams["train"][t]) == set(classes)
        assert targets(stream.benchmark.streams["test"][t]) == set(classes)
    assert build(registry, "embedded-cil", tasks=2).num_tasks == 2
    with pytest.raises(UserError, match="must divide"):
        resolve_factory(registry.scenarios()["embedded-cil"].factory)({"tasks": 3})


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
    for domain in (embedded.fashion(), embedded.digits(), embedded.letters(), embedded.symbols()):
        seen: dict[bytes, str] = {}
        for split, images in domain.splits.items():
            for image in images.images:
                key = image.tobytes()
                assert seen.setdefault(key, split) == split, f"{domain.name}: an image is in {seen[key]} and {split}"


def test_control_classes_are_never_trained_by_any_embedded_stream(registry):
    for name in ("embedded-mtil", "embedded-cil"):
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
