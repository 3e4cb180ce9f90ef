"""Write a ViT-B/16 CLIP with random weights in open_clip's safetensors format.

    python tools/random_vit_b16.py PATH [--seed 0]

For full-size smoke tests and benchmarks without the real OpenAI weights: the file loads through
`clbench run --backbone clip-vit-b16 --pretrained PATH` exactly as the real one does (same keys,
shapes and dtype; about 600 MB). Accuracies of a model with random weights mean nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write_random_vit_b16(path: str | Path, seed: int = 0) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(partial))
    partial.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_random_vit_b16(args.path, args.seed))


if __name__ == "__main__":
    main()
