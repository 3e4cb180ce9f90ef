"""Backbones: the shipped tiny-clip and the never-downloading ViT-B/16 loader."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cl_bench.backbones import tiny_clip, vit_b16
from cl_bench.contracts.specs import resolve_factory
from cl_bench.errors import UserError
from cl_bench.provenance import file_sha256
from cl_bench.running.plan import hash_weights


def load(spec, params):
    """A backbone as the run plan builds it: its weights file located and hashed, then loaded."""
    params = spec.resolve(params)
    return resolve_factory(spec.factory)(params, hash_weights(spec.weights_file(params)))


@pytest.fixture
def tiny(registry):
    return registry.backbones()["tiny-clip"]


def test_shipped_tiny_clip_matches_its_record(tiny):
    config = tiny_clip.read_config()
    assert file_sha256(tiny_clip.WEIGHTS_FILE) == config["weights_sha256"]
    assert tiny_clip.WEIGHTS_FILE.stat().st_size <= 20e6
    state = load_file(str(tiny_clip.WEIGHTS_FILE))
    assert {t.dtype for t in state.values()} == {torch.float16}
    assert config["arch"]["text_cfg"]["vocab_size"] == 49408  # open_clip's tokenizer ids reach 49407
    model = load(tiny, {})
    assert model.weights_sha256 == config["weights_sha256"]


def test_tiny_clip_zero_shot_is_well_above_chance_and_as_recorded(tiny):
    # The weights' record (config.json, written when tiny-clip was pre-trained) holds its zero-shot
    # accuracy on each domain's test split as embedded-mtil version 1 scored them (each task over
    # its own classes): the letters, digits and Fashion-MNIST as tiny-clip saw them in pre-training.
    from cl_bench.scenarios import embedded

    model = load(tiny, {}).eval()
    recorded = tiny_clip.read_config()["pretraining"]["zero_shot"]
    for domain in (embedded.letters(), embedded.digits(), embedded.fashion()):
        test = domain.splits["test"]
        model.set_classes([[embedded.TEMPLATES[0].format(name)] for name in domain.class_names])
        x = torch.from_numpy(test.images).unsqueeze(1).float().div(255.0)
        with torch.no_grad():
            accuracy = 100.0 * float((model(x).argmax(1) == torch.from_numpy(test.labels)).float().mean())
        chance = 100.0 / len(domain.class_names)
        assert accuracy >= 2 * chance, f"{domain.name}: {accuracy:.1f}% is not well above chance"
        assert accuracy == pytest.approx(recorded[f"embedded-mtil/{domain.name}"], abs=1.0)


def test_tiny_clip_refuses_a_corrupt_weights_file(tmp_path, tiny, monkeypatch):
    bad = tmp_path / "tiny.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="cannot load tiny-clip weights"):
        load(tiny, {"pretrained": str(bad)})
    monkeypatch.setattr(tiny_clip, "WEIGHTS_FILE", bad)  # the shipped file, edited: its recorded sha256 no longer fits
    with pytest.raises(UserError, match="do not match their recorded sha256"):
        load(tiny, {})


def test_vit_b16_without_weights_says_where_to_put_them(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = registry.backbones()["clip-vit-b16"]
    with pytest.raises(UserError, match="never downloads") as refused:
        spec.weights_file(spec.resolve({}))
    assert "--pretrained" in str(refused.value) and str(tmp_path / "hub") in str(refused.value)


def test_vit_b16_finds_the_cache_and_refuses_corrupt_files(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    weights = snapshot / "open_clip_model.safetensors"
    weights.write_bytes(json.dumps({"not": "weights"}).encode())
    assert vit_b16.cached_weights() == weights
    spec = registry.backbones()["clip-vit-b16"]
    with pytest.raises(UserError, match="cannot load ViT-B-16 weights"):
        load(spec, {})
    pickled = tmp_path / "objects.bin"
    torch.save({"weight": torch.zeros(1), "payload": Payload()}, pickled)  # not plain tensors: never unpickled
    with pytest.raises(UserError, match="cannot load"):
        load(spec, {"pretrained": str(pickled)})


class Payload:
    """An arbitrary object inside a checkpoint, which weights_only loading must refuse."""
