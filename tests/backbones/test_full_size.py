"""ViT-B/16 at full size on CPU: random weights in open_clip's safetensors format go through
--pretrained, and MoRAM adapts every q, k, v, out, fc and proj Linear of both towers."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

from cl_bench import RunConfig, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from random_vit_b16 import write_random_vit_b16  # noqa: E402
from streams.test_stream_example import EXAMPLE, image_folders  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_vit_b16(tmp_path_factory.mktemp("weights") / "vit-b16.safetensors")


def test_moram_trains_and_evaluates_a_full_size_vit_b16_from_a_weights_file(tmp_path, weights):
    spec = importlib.util.spec_from_file_location("my_streams_full", EXAMPLE / "my_streams" / "__init__.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    root = image_folders(tmp_path / "data")
    config = RunConfig(method="moram", scenario="folders", backbone="clip-vit-b16", pretrained=str(weights), data_root=str(root), iters=2, batch_size=4, threads=2, out=str(tmp_path / "runs"), progress=False)
    result = run(config, plugins=[plugin])
    assert result.status == "complete" and len(result.acc_matrix) == 3
    assert result.data["backbone"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    # 16 atoms per task on every adapted Linear: image tower 12 x (4 x 768+768, 768+3072, 3072+768),
    # text tower 12 x (4 x 512+512, 512+2048, 2048+512)
    per_atom = 12 * (4 * 1536 + 2 * 3840) + 12 * (4 * 1024 + 2 * 2560)
    assert result.data["params"]["trainable"] == [16 * per_atom, 16 * per_atom]
