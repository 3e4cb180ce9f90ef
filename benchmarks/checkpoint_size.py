"""Checkpoint size on disk, the format before (cl_bench.checkpoint/2: one torch.save file of the
whole model) against the current one (a JSON manifest + the changed tensors in safetensors).

    python benchmarks/checkpoint_size.py [--skip-vit] [--threads 2]

Each run is a real `clbench run` stopped at its first checkpoint (after task 1, 1 iteration):
tiny-clip with seq-lora and with finetune on embedded-cil, and ViT-B/16 with random weights
(tools/random_vit_b16.py, about 600 MB, in a temporary folder) with seq-lora on the docs'
image-folder stream, batch 4. The old format's size is that of the dict the old `save` wrote,
serialised with torch.save from the same arguments. Last, computed rather than run: seq-lora's
adapters on LLaMA-2-7B in bfloat16 (32 layers, hidden 4096, MLP 11008, vocabulary 32000), with
the rank and target layers that a seq-lora run on a language model resolves, named as cl_bench's
hf-causal-lm model names them (taken from tiny-lm, built for the purpose); only the adapter
tensors are made, the manifest's lines for the 291 base tensors are written with placeholder
digests, and the old size is the bytes of all tensors.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]


class Stop(Exception):
    """Raised once the first checkpoint is measured: the rest of the run is not needed."""


def old_format_bytes(arguments: dict) -> tuple[int, float]:
    """The size of what cl_bench.checkpoint/2 wrote for these `save` arguments, and its torch.save seconds."""
    import torch

    state = {
        "format": "cl_bench.checkpoint/2",
        "run_id": arguments["run_id"],
        "identity": arguments["identity"],
        "next_task": arguments["next_task"],
        "progress": json.dumps(arguments["progress"]),
        "model": arguments["model"],
        "method": arguments["method"],
        "sha256": "0" * 64,
    }
    buffer = io.BytesIO()
    began = time.perf_counter()
    torch.save(state, buffer)
    return buffer.tell(), time.perf_counter() - began


def measure(config, plugins=()) -> dict:
    """Run `config` to its first checkpoint; the sizes (and save seconds) of both formats."""
    from cl_bench import run
    from cl_bench.running import checkpoint

    original = checkpoint.save
    measured: dict = {}

    def save_and_measure(path, **arguments):
        began = time.perf_counter()
        original(path, **arguments)
        measured["new_s"] = time.perf_counter() - began
        manifest = json.loads(path.read_text())
        measured["manifest"] = path.stat().st_size
        measured["tensors"] = sum(f.stat().st_size for f in checkpoint.tensors_files(path))
        measured["stored"] = sum(1 for e in manifest["tensors"].values() if e["in"] == "file")
        measured["referenced"] = sum(1 for e in manifest["tensors"].values() if e["in"] == "reference")
        measured["old"], measured["old_s"] = old_format_bytes(arguments)
        raise Stop

    with mock.patch.object(checkpoint, "save", save_and_measure):
        try:
            run(config, plugins=plugins)
        except Stop:
            pass
    return measured


def llama_7b_lora(scratch: Path) -> dict:
    """seq-lora's adapters at LLaMA-2-7B's shapes (bfloat16), saved as a checkpoint; the base's lines added to its manifest."""
    import torch

    from cl_bench import RunConfig, plan
    from cl_bench.running import checkpoint
    from cl_bench.running.build import build

    planned = plan(RunConfig(method="seq-lora", scenario="embedded-instruct", backbone="tiny-lm", progress=False, out=str(scratch / "lm")))
    rank = int(planned.hparams["rank"])
    template = [name for name in build(planned).model.state_dict() if ".layers." not in name or ".layers.0." in name]
    hidden, mlp, vocab, layers = 4096, 11008, 32000, 32

    def shape(name: str) -> tuple[int, ...]:
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            return (vocab, hidden)
        if name.endswith("norm.weight"):
            return (hidden,)
        out_in = (hidden, mlp) if ".down_proj." in name else (mlp, hidden) if re.search(r"\.(gate|up)_proj\.", name) else (hidden, hidden)
        if name.endswith("lora_A"):
            return (rank, out_in[1])
        if name.endswith("lora_B"):
            return (out_in[0], rank)
        return out_in

    names = [n.replace(".layers.0.", f".layers.{i}.") for n in template for i in (range(layers) if ".layers.0." in n else [0])]
    adapters = {n: torch.randn(shape(n), dtype=torch.bfloat16) for n in names if ".lora_" in n}
    base = {n: shape(n) for n in names if ".lora_" not in n}
    path = scratch / "llama.ckpt"
    progress = {"acc": [[0.0] * 8] * 2, "control": [[]] * 2, "timings": {"experiences": [{}]}, "params": {"trainable": [0], "added": [0]}, "elapsed": 0.0}
    checkpoint.save(path, run_id="llama-2-7b", identity=planned.identity_json(), next_task=1, progress=progress, model=adapters, method={})
    manifest = json.loads(path.read_text())
    manifest["tensors"].update({f"model/{n}": {"dtype": "bfloat16", "shape": list(s), "sha256": "0" * 64, "in": "reference"} for n, s in base.items()})
    every = [*adapters.values()]
    old = sum(t.numel() for t in every) * 2 + sum(torch.Size(s).numel() for s in base.values()) * 2
    return {
        "rank": rank,
        "targets": ",".join(planned.hparams["layers"]),
        "adapter_params": sum(t.numel() for t in every),
        "base_params": sum(torch.Size(s).numel() for s in base.values()),
        "manifest": len(json.dumps(manifest, indent=1)) + 1,
        "tensors": sum(f.stat().st_size for f in checkpoint.tensors_files(path)),
        "stored": len(adapters),
        "referenced": len(base),
        "old": old,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-vit", action="store_true", help="leave out ViT-B/16 (writes 600 MB of weights and trains it on the CPU)")
    args = parser.parse_args()

    from cl_bench import RunConfig
    from cl_bench.running.runner import quiet_third_party_warnings

    quiet_third_party_warnings()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for method in ("seq-lora", "finetune"):
            config = RunConfig(method=method, scenario="embedded-cil", iters=1, threads=args.threads, out=str(scratch / method), progress=False)
            rows[f"tiny-clip {method}, embedded-cil"] = measure(config)
        if not args.skip_vit:
            sys.path.insert(0, str(ROOT / "tools"))
            sys.path.insert(0, str(ROOT / "tests"))
            from random_vit_b16 import write_random_vit_b16
            from streams.test_stream_example import EXAMPLE, image_folders

            spec = importlib.util.spec_from_file_location("my_streams", EXAMPLE / "my_streams" / "__init__.py")
            plugin = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(plugin)
            weights = write_random_vit_b16(scratch / "vit-b16.safetensors")
            config = RunConfig(
                method="seq-lora",
                scenario="folders",
                backbone="clip-vit-b16",
                pretrained=str(weights),
                data_root=str(image_folders(scratch / "data")),
                iters=1,
                batch_size=4,
                threads=args.threads,
                out=str(scratch / "vit"),
                progress=False,
            )
            rows["ViT-B/16 seq-lora, image folders"] = measure(config, plugins=[plugin])
        lm = llama_7b_lora(scratch)
    print(f"{'run':34} {'old format':>12} {'new: manifest':>14} {'+ tensors':>12} {'= total':>12} {'ratio':>8} {'stored/referenced':>18} {'save s old/new':>15}")
    for name, m in rows.items():
        total = m["manifest"] + m["tensors"]
        sizes = f"{m['old'] / 1e6:10.2f}MB {m['manifest'] / 1e3:12.1f}kB {m['tensors'] / 1e6:10.3f}MB {total / 1e6:10.3f}MB {m['old'] / total:7.0f}x"
        print(f"{name:34} {sizes} {m['stored']:>8}/{m['referenced']:<9} {m['old_s']:7.2f}/{m['new_s']:.2f}")
    total = lm["manifest"] + lm["tensors"]
    sizes = f"{lm['old'] / 1e9:10.2f}GB {lm['manifest'] / 1e3:12.1f}kB {lm['tensors'] / 1e6:10.3f}MB {total / 1e6:10.3f}MB {lm['old'] / total:7.0f}x"
    print(f"{'LLaMA-2-7B seq-lora (computed)':34} {sizes} {lm['stored']:>8}/{lm['referenced']:<9}")
    print(f"  (LLaMA-2-7B: rank {lm['rank']} on {lm['targets']}, {lm['adapter_params'] / 1e6:.1f} M adapter and {lm['base_params'] / 1e9:.2f} B base parameters, bfloat16)")


if __name__ == "__main__":
    main()
