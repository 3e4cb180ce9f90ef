"""Sharded training (`shard_weights` under `--nproc 2`, FSDP on gloo): equal to the unsharded
two-process run, frozen weights untouched, an interrupted run resumed exactly, refusals in one line.

The runs spawn worker processes: slow, and one at a time with the other multi-process tests
(xdist group "nproc"); the uninterrupted ones are tests/two_process_runs.py's, trained through
one launch for the session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from two_process_runs import SHARDED_METHODS, config, largest_cell_difference, sharded_settings

from cl_bench import RunConfig, run
from cl_bench.errors import UserError

pytestmark = pytest.mark.xdist_group("nproc")

def sharded(out: Path, method: str, **kwargs) -> RunConfig:
    return config(out, **sharded_settings(method), nproc=2, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("method", SHARDED_METHODS)
def test_sharded_training_equals_unsharded(method, two_process_runs):
    unsharded, sharded = (two_process_runs.results[f"{method} tiny-lm{kind}"] for kind in ("", " sharded"))
    assert sharded.run_id == unsharded.run_id and sharded.data["execution"]["shard_weights"] is True and unsharded.data["execution"]["shard_weights"] is False
    assert sharded.data["execution"]["nproc"] == unsharded.data["execution"]["nproc"] == 2
    difference = largest_cell_difference(unsharded, sharded)
    print(f"shard_weights against unsharded, two processes: {method} on tiny-lm: largest cell difference {difference}")
    assert difference == 0.0  # measured: bit for bit (docs/multi-process.md)
    assert sharded.data["outcomes"] == unsharded.data["outcomes"] and sharded.metrics == unsharded.metrics
    assert sharded.data["params"] == unsharded.data["params"]  # the trainable counts are the whole model's, not a shard's


@pytest.mark.slow
def test_an_interrupted_sharded_run_resumes_exactly_and_its_frozen_weights_stay(tmp_path, two_process_runs):
    import nproc_sharded_toys

    whole = two_process_runs.results["seq-lora tiny-lm sharded"]
    out = tmp_path / "split"
    with pytest.raises(UserError, match="process 0 of 2 exited with code 3"):
        run(sharded(out, "seq-lora"), plugins=[nproc_sharded_toys])  # stops after the first task
    (checkpoint,) = out.glob("*.ckpt")
    entries = json.loads(checkpoint.read_text())["tensors"]
    model = {name: entry["in"] for name, entry in entries.items() if name.startswith("model/")}
    trained = {name for name, where in model.items() if where == "file"}
    # Gathered from the shards, every frozen weight is bit-equal to the model as built (the
    # checkpoint names it by sha256 instead of storing it); only the LoRA factors were trained.
    assert trained and all("lora" in name for name in trained), sorted(trained)[:5]
    assert sum(where == "reference" for where in model.values()) > len(trained)
    resumed = run(sharded(out, "seq-lora", resume=True))
    assert resumed.run_id == whole.run_id
    assert resumed.acc_matrix == whole.acc_matrix and resumed.control_matrix == whole.control_matrix
    assert resumed.data["outcomes"] == whole.data["outcomes"] and not list(out.glob("*.ckpt"))


@pytest.mark.slow
def test_each_process_holds_half_of_every_weight_and_gathers_them_back(tmp_path):
    import torch
    import torch.multiprocessing as mp

    mp.start_processes(_shard_and_gather(), args=(str(tmp_path / "rendezvous"), str(tmp_path / "held")), nprocs=2, start_method="spawn")
    zero, one = (torch.load(tmp_path / f"held.{rank}", weights_only=True) for rank in (0, 1))
    for seen in (zero, one):
        assert seen["released"] and seen["shapes"] and seen["same"] and seen["mapped"] and seen["trainable"] > 0
    assert zero["held"].keys() == one["held"].keys()
    empty = [name for name, (_, _, whole) in zero["held"].items() if whole == 0]
    assert empty  # MoRAM's banks of earlier atoms, before any: FSDP leaves them alone
    for name, (is_shard, local, whole) in zero["held"].items():
        other_is_shard, other_local, _ = one["held"][name]
        if name in empty:
            assert not is_shard and not other_is_shard, name
            continue
        assert is_shard and other_is_shard, name
        assert local + other_local == whole and max(local, other_local) < whole, name  # split, not copied


def _shard_and_gather():
    from nproc_sharded_toys import shard_and_gather

    return shard_and_gather


def test_shard_weights_refuses_what_it_cannot_do(tmp_path):
    cases = [
        ({"method": "seq-lora", "nproc": 1}, "shard_weights shards the weights over the processes of a run: it needs --nproc 2 or more"),
        ({"method": "seq-lora", "scenario": "embedded-mtil", "backbone": "tiny-clip"}, "shard_weights: backbone 'tiny-clip' cannot be sharded"),
        ({"method": "ewc"}, "shard_weights: method 'ewc' does not train sharded"),
    ]
    for settings, message in cases:
        with pytest.raises(UserError) as caught:
            run(config(tmp_path / "out", **{"scenario": "embedded-instruct", "backbone": "tiny-lm", "nproc": 2, "shard_weights": True, **settings}))
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_run_sweep_and_config_files_take_shard_weights(tmp_path):
    from cl_bench.cli import build_config, build_parser

    for argv in (["run", "--nproc", "2", "--shard-weights"], ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-instruct", "--shard-weights"], ["run", "--set", "shard_weights=true"]):
        args = build_parser().parse_args(argv)
        if argv[0] == "sweep":  # as cmd_sweep leaves them: the grid's own settings come from the grid
            args.method = args.scenario = args.seed = args.config = None
        assert build_config(args).shard_weights is True
    assert build_config(build_parser().parse_args(["run"])).shard_weights is False
    file = tmp_path / "run.toml"
    file.write_text("nproc = 2\nshard_weights = true\n")
    assert build_config(build_parser().parse_args(["run", "--config", str(file)])).shard_weights is True
    assert RunConfig.from_dict(json.loads(json.dumps(RunConfig(shard_weights=True).to_dict()))).shard_weights is True
    assert "shard_weights" in RunConfig.EXECUTION_FIELDS
    with pytest.raises(UserError, match="shard_weights expects"):
        RunConfig().set("shard_weights", "sometimes")


def test_a_method_that_trains_parameters_outside_the_model_is_stopped_before_sharding():
    import torch

    from cl_bench import Backbone
    from cl_bench.running.sharding import shard

    model = Backbone()
    model.layer = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match=r"trains 1 parameter\(s\) outside the model"):
        shard(model, [model.layer.weight, torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"))
    assert model.layer.weight.shape == (2, 2)  # nothing was released
