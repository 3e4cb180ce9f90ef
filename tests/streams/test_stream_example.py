"""The "Write your own stream" example of docs/plugins.md: the tested files are the docs', and the
stream runs end to end from a folder of PNG files through the public API only."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cl_bench import RunConfig, UserError, run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).resolve().parents[1] / "stream_example"
COLOURS = {"cat": (230, 40, 40), "dog": (40, 230, 40), "fox": (40, 40, 230), "owl": (230, 230, 40)}


def test_docs_show_exactly_the_tested_stream():
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    shown = dict(re.findall(r"<!-- example-stream: (\S+) -->\s*```\w*\n(.*?)```", text, flags=re.S))
    files = {str(p.relative_to(EXAMPLE)): p.read_text(encoding="utf-8") for p in EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shown == files


@pytest.fixture
def plugin():
    spec = importlib.util.spec_from_file_location("my_streams", EXAMPLE / "my_streams" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_folders(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for task, names in (("t1", ("cat", "dog")), ("t2", ("fox", "owl"))):
        for split, count in (("train", 4), ("test", 2)):
            for name in names:
                folder = root / "folders" / task / split / name
                folder.mkdir(parents=True)
                for index in range(count):
                    pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def test_the_example_stream_runs_from_local_files(tmp_path, plugin):
    root = image_folders(tmp_path / "data")
    result = run(RunConfig(method="seq-lora", scenario="folders", data_root=str(root), iters=2, batch_size=4, out=str(tmp_path / "runs"), progress=False), plugins=[plugin])
    scenario = result.data["scenario"]
    assert scenario["task_order"] == ["t1", "t2"] and scenario["class_names"] == ["cat", "dog", "fox", "owl"]
    assert scenario["class_order"] == [[0, 1], [2, 3]] and scenario["protocol"] == "class-il"
    assert result.status == "complete" and len(result.acc_matrix) == 3 and all(len(row) == 2 for row in result.acc_matrix)


def test_the_example_stream_names_missing_data_before_any_work(tmp_path, plugin):
    with pytest.raises(UserError, match=r"folders: no task folders under .*empty/folders; give --data-root"):
        run(RunConfig(method="seq-lora", scenario="folders", data_root=str(tmp_path / "empty"), out=str(tmp_path / "runs"), progress=False), plugins=[plugin])
    assert not (tmp_path / "runs").exists()
