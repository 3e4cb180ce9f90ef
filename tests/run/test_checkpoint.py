"""The checkpoint format on its own: what is referenced and what stored, the method's plain values
through JSON, a changed backbone named on resume, and the manifest / tensors pair never half-updated.
Whole runs that resume are in test_run.py, tampered checkpoints in cli/test_bad_input.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from cl_bench.errors import UserError
from cl_bench.results.identity import canonical_json
from cl_bench.running import checkpoint
from cl_bench.running.runner import strategy_state

IDENTITY = canonical_json({"seed": 0})
PROGRESS = {
    "acc": [[10.0, 20.0], [30.0, 40.0]],
    "control": [[], []],
    "timings": {"experiences": [{"task": "a"}]},
    "params": {"trainable": [3], "added": [0]},
    "elapsed": 1.5,
}


def built() -> torch.nn.Module:
    """A model as a run builds it: the same weights every time (the seed), like a pre-trained backbone."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    model.register_buffer("counts", torch.zeros(2, dtype=torch.int64))
    return model


def save(path, model, reference, method=None, strategy=None):
    checkpoint.save(path, run_id="r", identity=IDENTITY, next_task=1, progress=PROGRESS, model=model.state_dict(), method=method or {}, reference=reference, strategy=strategy)


def load(path, reference):
    return checkpoint.load(path, identity=IDENTITY, num_tasks=2, num_controls=0, reference=reference)


def test_only_what_changed_is_stored_and_a_rebuilt_model_resumes_to_the_same_state(tmp_path):
    model = built()
    reference = checkpoint.fingerprints(model.state_dict())
    with torch.no_grad():
        model[2].weight.add_(1.0)  # trained
        model[0].bias.mul_(0.5)  # merged in place into a frozen weight
        model.counts += 3  # a buffer the method keeps
    method = {
        "memory": {"keys": [0, 2], "groups": [{"inputs": torch.arange(6.0).reshape(2, 3), "tasks": torch.tensor([0, 2])}]},
        "ranks": (4, 2),
        "seen": 7,
        "by_task": {1: "a", 3: None},
        "loss": math.nan,
        "on": True,
        "scale": 0.1,
        "a/b": torch.ones(1),  # spells the same place as a["b"]
        "a": {"b": torch.zeros(1)},
    }
    path = tmp_path / "run.ckpt"
    save(path, model, reference, method)

    manifest = json.loads(path.read_text())
    places = {name: entry["in"] for name, entry in manifest["tensors"].items()}
    stored = {"model/2.weight", "model/0.bias", "model/counts", "method/memory/groups/0/inputs", "method/memory/groups/0/tasks", "method/a/b", "method/a/b#6"}
    assert {name for name, where in places.items() if where == "file"} == stored
    assert {name for name, where in places.items() if where == "reference"} == {"model/0.weight", "model/1.weight", "model/1.bias", "model/2.bias"}
    (tensors_file,) = tmp_path.glob("run.ckpt.*.safetensors")
    assert manifest["tensors_file"] == tensors_file.name
    with safe_open(str(tensors_file), "pt") as tensors:
        assert set(tensors.keys()) == stored  # noqa: SIM118 (safe_open is no dict)

    fresh = built()
    saved = load(path, checkpoint.fingerprints(fresh.state_dict()))
    checkpoint.restore_model(fresh, saved)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor) and fresh.state_dict()[name].dtype == tensor.dtype, name
    restored = saved.method
    assert restored["ranks"] == (4, 2) and restored["by_task"] == {1: "a", 3: None} and math.isnan(restored["loss"])
    assert (restored["seen"], restored["on"], restored["scale"], restored["memory"]["keys"]) == (7, True, 0.1, [0, 2])
    assert torch.equal(restored["memory"]["groups"][0]["inputs"], method["memory"]["groups"][0]["inputs"])
    assert restored["memory"]["groups"][0]["tasks"].dtype == torch.int64
    assert torch.equal(restored["a/b"], torch.ones(1)) and torch.equal(restored["a"]["b"], torch.zeros(1))


def test_a_rebuilt_backbone_that_differs_is_one_line_naming_the_tensor(tmp_path):
    model = built()
    path = tmp_path / "run.ckpt"
    save(path, model, checkpoint.fingerprints(model.state_dict()))
    other = built()
    with torch.no_grad():
        other[1].weight[0] += 1e-6  # other weights, or code that builds them otherwise
    with pytest.raises(UserError, match=r"this run's rebuilt 1\.weight is not the one the checkpoint references \(sha256 [0-9a-f]{12}, expected [0-9a-f]{12}\)"):
        load(path, checkpoint.fingerprints(other.state_dict()))


def test_nothing_changed_writes_no_tensors_file(tmp_path):
    model = built()
    path = tmp_path / "run.ckpt"
    save(path, model, checkpoint.fingerprints(model.state_dict()), {"active": True})
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"] and json.loads(path.read_text())["tensors_file"] is None
    assert load(path, checkpoint.fingerprints(built().state_dict())).method == {"active": True}


def test_tied_weights_are_stored_once_each_and_load_back(tmp_path):
    model = built()
    model[2].weight = torch.nn.Parameter(torch.ones(2, 3))
    model.register_parameter("tied", model[2].weight)  # shares its storage: safetensors refuses that unless copied
    path = tmp_path / "run.ckpt"
    save(path, model, None)
    saved = load(path, {})
    assert torch.equal(saved.model["tied"], torch.ones(2, 3)) and torch.equal(saved.model["2.weight"], torch.ones(2, 3))


def test_state_that_is_not_a_plain_value_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "run.ckpt"
    with pytest.raises(UserError, match=r"method/fitted in the state is a object; a checkpoint keeps tensors and plain values"):
        save(path, built(), None, {"fitted": object()})
    with pytest.raises(UserError, match="has a key of type float"):
        save(path, built(), None, {"by_score": {0.5: 1}})
    assert list(tmp_path.iterdir()) == []


def test_a_save_killed_before_its_manifest_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    model = built()
    reference = checkpoint.fingerprints(model.state_dict())
    path = tmp_path / "run.ckpt"
    with torch.no_grad():
        model[2].weight.add_(1.0)
    save(path, model, reference)
    first_manifest = path.read_bytes()
    with torch.no_grad():
        model[2].weight.add_(1.0)
    real_write_text = type(path).write_text

    def die_writing_the_manifest(self, *args, **kwargs):
        raise KeyboardInterrupt  # as a kill would, once the new tensors file is in place

    monkeypatch.setattr(type(path), "write_text", die_writing_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        save(path, model, reference)
    monkeypatch.setattr(type(path), "write_text", real_write_text)
    assert path.read_bytes() == first_manifest and len(list(tmp_path.glob("run.ckpt.*.safetensors"))) == 2
    first = load(path, reference)
    assert torch.equal(first.model["2.weight"], built()[2].weight + 1.0)  # the first checkpoint, not a mix

    save(path, model, reference)  # the next save removes what the killed one left
    assert len(list(tmp_path.glob("run.ckpt.*.safetensors"))) == 1 and not list(tmp_path.glob(".*"))
    assert torch.equal(load(path, reference).model["2.weight"], model[2].weight)
    checkpoint.remove(path)
    assert list(tmp_path.iterdir()) == []


def test_the_fp16_grad_scale_carries_over_a_resume():
    """The one piece of strategy state that outlives an experience (its scale moves from task to task);
    fp16 runs need CUDA, so the scaler here is the CPU one, which keeps the same state."""

    class Strategy:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)

    Strategy.scaler.scale(torch.ones(()))  # the scale exists once a loss has been scaled
    Strategy.scaler.update(new_scale=512.0)
    state = strategy_state(Strategy())
    assert state["grad_scaler"]["scale"] == 512.0
    tensors: dict = {}
    restored = checkpoint.decode(json.loads(json.dumps(checkpoint.encode(state, "strategy", tensors))), tensors)
    fresh = torch.amp.GradScaler("cpu")
    fresh.load_state_dict(restored["grad_scaler"])
    assert fresh.get_scale() == 512.0 and fresh.state_dict() == Strategy.scaler.state_dict()


def test_a_strategy_without_a_scaler_saves_nothing_of_it():
    class Strategy:
        scaler = None

    assert strategy_state(Strategy()) == {}


def test_an_oversized_manifest_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    save(path, built(), None)
    monkeypatch.setattr(checkpoint, "MAX_MANIFEST_BYTES", 1 << 10)
    with pytest.raises(UserError, match=r"run.ckpt is over 1,024 bytes: not a cl_bench.checkpoint/3 manifest"):
        load(path, {})
    assert checkpoint.recorded_identity(path) is None
