"""Pre-train tiny-clip on the pre-training splits that the embedded scenario plugins expose.

    python tools/pretrain_tiny_clip.py [--out DIR] [--steps N] [--seed S]

Captions are made from class names with a few templates; the objective is CLIP's image-to-text
cross-entropy over the text features of every pre-training class (class names repeat within a
batch, so the image-text pairing of plain contrastive CLIP would mark true pairs as negatives).
Both towers train. The script is seeded; with the same library versions and thread count it
reproduces the shipped weights. It writes `tiny_clip.safetensors` (fp16) and `config.json`
(architecture, preprocessing, sha256, and this run's record) into `--out` (default: the package).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

ARCH: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 64, "layers": 4, "head_width": 32, "mlp_ratio": 4.0},
    # open_clip's tokenizer emits ids up to 49407: the vocabulary must stay at 49408.
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 4.0},
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}
CAPTION_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.")
def package_folder() -> Path:
    """Where the shipped weights live: the tiny_clip backbone package."""
    from cl_bench.backbones import tiny_clip

    return Path(tiny_clip.__file__).resolve().parent


DEFAULTS = {"steps": 2000, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.05, "warmup": 150, "seed": 0}


def gather_pretraining_data(registry=None) -> dict[str, Any]:
    """Every embedded scenario's pre-training splits, merged by source name."""
    from cl_bench.config.registry import Registry

    registry = registry or Registry()
    sources: dict[str, Any] = {}
    for spec in registry.scenarios().values():
        if spec.pretraining_data is not None:
            sources.update(spec.pretraining_data())
    if not sources:
        raise SystemExit("no scenario plugin exposes pre-training data")
    return dict(sorted(sources.items()))


def _stack(sources: dict[str, Any]):
    import numpy as np
    import torch

    class_names: list[str] = []
    images, labels = [], []
    for split in sources.values():
        class_names.extend(name for name in split.class_names if name not in class_names)
        mapping = np.array([class_names.index(name) for name in split.class_names])
        images.append(torch.from_numpy(split.images).unsqueeze(1).float().div_(255.0))
        labels.append(torch.from_numpy(mapping[split.labels]))
    return torch.cat(images), torch.cat(labels).long(), class_names


def _jitter(x, generator):
    """One random translation of up to 2 pixels (pad, then crop) for the whole batch."""
    import torch
    import torch.nn.functional as F

    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    from cl_bench.backbones.tiny_clip import build_clip, wrap
    from cl_bench.provenance import cpu_name

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    sources = gather_pretraining_data()
    images, labels, class_names = _stack(sources)
    clip = build_clip(ARCH)
    model = wrap(clip, ARCH, None)
    model.set_classes([[t.format(name) for t in CAPTION_TEMPLATES] for name in class_names])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    # One prompt per class per step, its template drawn at random: the text tower sees them all.
    tokens = model.prompt_tokens.view(len(class_names), len(CAPTION_TEMPLATES), -1)
    started = time.time()
    for step in range(args.steps):
        batch = torch.randint(0, len(labels), (args.batch_size,), generator=generator)
        x = _jitter(images[batch], generator)
        template = torch.randint(0, len(CAPTION_TEMPLATES), (len(class_names),), generator=generator)
        text = model.encode_text(tokens[torch.arange(len(class_names)), template])
        logits = model.logit_scale * model.encode_image(x) @ text.t()
        loss = F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - started:.0f}s", file=sys.stderr)
    record = {
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup": args.warmup,
        "objective": "image-to-text cross-entropy over all pre-training classes",
        "caption_templates": list(CAPTION_TEMPLATES),
        "sources": {name: {"size": len(s.labels), "sha256": s.sha256(), "classes": list(s.class_names)} for name, s in sources.items()},
        "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": cpu_name(),  # another CPU kind rounds differently: the weights differ in their bits
        "final_loss": round(float(loss.item()), 4),
    }
    return model, record


def zero_shot_report(model) -> dict[str, float]:
    """Zero-shot accuracy (%) of `model` on each embedded scenario's test sets and control sets."""
    import torch

    from cl_bench.config.registry import Registry
    from cl_bench.contracts.specs import resolve_factory
    from cl_bench.contracts.stream import Stream

    report: dict[str, float] = {}
    model.eval()
    for name, spec in Registry().scenarios().items():
        if spec.pretraining_data is None:
            continue
        stream: Stream = resolve_factory(spec.factory)(spec.resolve({}), None)
        model.set_classes(stream.prompts())
        sets = [(f"{name}/{t}", stream.benchmark.streams["test"][i].dataset, stream.label_space(0, i)) for i, t in enumerate(stream.task_names)]
        sets += [(f"{name}/control:{c}", stream.benchmark.streams["control"][i].dataset, stream.control_classes[i]) for i, c in enumerate(stream.control_names)]
        for label, dataset, space in sets:
            model.set_label_space(space)
            x = torch.stack([dataset[i][0] for i in range(len(dataset))])
            y = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
            with torch.no_grad():
                predicted = torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
            report[label] = round(100.0 * float((predicted == y).float().mean()), 2)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(package_folder()), help="folder for tiny_clip.safetensors and config.json")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    from cl_bench.provenance import file_sha256
    from cl_bench.running.runner import quiet_third_party_warnings

    quiet_third_party_warnings()
    model, record = train(args)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in _open_clip_state(model).items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "tiny_clip.safetensors"
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp))
    tmp.replace(weights)
    # Score the fp16 weights that ship, not the fp32 ones in memory.
    from cl_bench.backbones.tiny_clip import build_clip, wrap

    shipped = build_clip(ARCH)
    shipped.load_state_dict({k: v.float() for k, v in state.items()})
    record["zero_shot"] = zero_shot_report(wrap(shipped, ARCH, None))
    config = {"arch": ARCH, "weights": weights.name, "weights_sha256": file_sha256(weights), "pretraining": record}
    config_file = out / "config.json"
    config_file.with_suffix(".tmp").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    config_file.with_suffix(".tmp").replace(config_file)
    print(json.dumps(record["zero_shot"], indent=2))
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and {config_file}")


def _open_clip_state(model) -> dict[str, Any]:
    """The weights in open_clip's own layout (fused attention), as open_clip would save them."""
    from cl_bench.backbones.tiny_clip import build_clip

    reference = build_clip(ARCH)
    state = {}
    for key in reference.state_dict():
        state[key] = _fused(model, key)
    return state


def _fused(model, key: str):
    import torch

    own = dict(model.clip.state_dict())
    if key in own:
        return own[key]
    prefix, _, leaf = key.rpartition(".")  # ...attn.in_proj_weight | in_proj_bias
    kind = "weight" if leaf == "in_proj_weight" else "bias"
    return torch.cat([own[f"{prefix}.{p}_proj.{kind}"] for p in ("q", "k", "v")])


if __name__ == "__main__":
    main()
