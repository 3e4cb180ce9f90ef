"""The real-data streams' reference data (ZSCL's ImageNet images and Conceptual Captions texts),
read from a fake data root in ZSCL's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cl_bench.errors import UserError
from cl_bench.scenarios.reference_data import CC_CAPTIONS, IMAGENET_TRAIN, read_imagenet_cc

SIZE = 16


def fake_root(root, captions: str = "filepath\ttitle\nimages/0.jpg\ta dog on a couch\nimages/1.jpg\t\nimages/2.jpg\tthe sky at dusk\n"):
    rng = np.random.default_rng(0)
    for wnid in ("n02", "n01"):
        for name in ("b.png", "a.JPEG"):
            path = root / IMAGENET_TRAIN / wnid / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(path, format="PNG")
    (root / IMAGENET_TRAIN / "n01" / "notes.txt").write_text("not an image")
    (root / CC_CAPTIONS).write_text(captions, encoding="utf-8")
    return root


def test_imagenet_images_in_folder_order_and_every_caption_with_text(tmp_path):
    reference = read_imagenet_cc(fake_root(tmp_path), SIZE)
    assert list(reference.texts) == ["a dog on a couch", "the sky at dusk"]  # the empty caption left out
    dataset = reference.dataset
    assert [p.split("/")[-2:] for p in dataset.paths] == [["n01", "a.JPEG"], ["n01", "b.png"], ["n02", "a.JPEG"], ["n02", "b.png"]]
    image, label = dataset[2]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, SIZE, SIZE) and int(label) == -1  # captions are not the images' own
    images, labels = next(reference.batches(3, shuffle=True, seed=1))
    assert tuple(images.shape) == (3, 3, SIZE, SIZE) and labels.tolist() == [-1, -1, -1]


def test_missing_files_and_a_csv_without_captions_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="reference data missing") as info:
        read_imagenet_cc(tmp_path, SIZE)
    assert str(tmp_path / IMAGENET_TRAIN) in str(info.value) and CC_CAPTIONS in str(info.value) and "\n" not in str(info.value)
    fake_root(tmp_path, captions="filepath\tcaption\nimages/0.jpg\ta dog\n")
    with pytest.raises(UserError, match="no 'title' column"):
        read_imagenet_cc(tmp_path, SIZE)
