"""clip-vit-b16: open_clip's ViT-B-16 with weights from a local file or an existing local cache.

Nothing is downloaded: without weights the error says where to put them. Accepted files are
open_clip checkpoints as safetensors, or state dicts read with `torch.load(weights_only=True)`
(OpenAI's TorchScript `ViT-B-16.pt` archive is not one; use the safetensors file instead).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cl_bench import UserError

HF_REPO = "timm/vit_base_patch16_clip_224.openai"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
IMAGE_SIZE = 224


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_weights() -> Path | None:
    """The OpenAI ViT-B/16 weights if open_clip (or huggingface_hub) already cached them."""
    snapshots = _hub_cache() / f"models--{HF_REPO.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir():
        for name in WEIGHT_NAMES:
            for candidate in sorted(snapshots.glob(f"*/{name}")):
                if candidate.is_file():
                    return candidate
    return None


def _weights_path(params: dict[str, Any]) -> Path | None:
    given = params.get("pretrained")
    return Path(given).expanduser() if given else cached_weights()


def weights_file(params: dict[str, Any]) -> str:
    path = _weights_path(params)
    if path is None:
        raise UserError(
            "clip-vit-b16 needs local weights and never downloads them: pass --pretrained PATH "
            f"(open_clip ViT-B-16 'openai' weights, e.g. {WEIGHT_NAMES[0]} from huggingface.co/{HF_REPO}) "
            f"or put them in the Hugging Face cache at {_hub_cache() / ('models--' + HF_REPO.replace('/', '--'))}/snapshots/<revision>/"
        )
    if not path.is_file():
        raise UserError(f"clip-vit-b16 weights {path} not found; check --pretrained")
    return str(path)


def load(params: dict[str, Any], weights):
    import open_clip
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from .clip import ClipModel

    path = Path(weights.path)
    model = open_clip.create_model(params["model"], pretrained=None, force_quick_gelu=params["quick_gelu"])
    state: Any  # a state dict, or a checkpoint holding one under "state_dict"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # corrupt file, foreign format, pickled objects we refuse to load
        raise UserError(f"cannot load {params['model']} weights from {path}: {str(exc).splitlines()[0]}") from exc
    return ClipModel(
        model,
        open_clip.get_tokenizer(params["model"]),
        name="clip-vit-b16",
        image_size=IMAGE_SIZE,
        mean=OPENAI_DATASET_MEAN,
        std=OPENAI_DATASET_STD,
        weights_sha256=weights.sha256,
    )
