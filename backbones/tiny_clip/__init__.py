"""tiny-clip, the embedded default backbone: a small open_clip CLIP whose weights ship in the package.

`config.json` holds the architecture, the preprocessing, the weights' sha256 and the record of how
`tools/pretrain_tiny_clip.py` made them; `tiny_clip.safetensors` holds the weights (fp16).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cl_bench import UserError

HERE = Path(__file__).resolve().parent
CONFIG_FILE = HERE / "config.json"
WEIGHTS_FILE = HERE / "tiny_clip.safetensors"
CONTEXT_LENGTH_NOTE = "open_clip's tokenizer emits ids up to 49407, so the vocabulary stays at 49408"


def read_config() -> dict[str, Any]:
    if not CONFIG_FILE.is_file():
        raise UserError(f"tiny-clip config {CONFIG_FILE} is missing; reinstall cl-bench")
    return json.loads(CONFIG_FILE.read_text(encoding="utf-8"))


def build_clip(arch: dict[str, Any]):
    """An untrained open_clip CLIP with the given architecture (open_clip's own classes)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    return CLIP(
        embed_dim=arch["embed_dim"],
        vision_cfg=CLIPVisionCfg(**arch["vision_cfg"]),
        text_cfg=CLIPTextCfg(**arch["text_cfg"]),
    )


def tokenizer(arch: dict[str, Any]):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=arch["text_cfg"]["context_length"])


def wrap(clip, arch: dict[str, Any], weights_sha256: str | None):
    from ..clip import ClipModel

    return ClipModel(
        clip,
        tokenizer(arch),
        name="tiny-clip",
        image_size=arch["vision_cfg"]["image_size"],
        mean=arch["mean"],
        std=arch["std"],
        weights_sha256=weights_sha256,
    )


def weights_file(params: dict[str, Any] | None = None) -> str:
    """The weights a run loads: `pretrained` if given, else the shipped file."""
    path = Path((params or {}).get("pretrained") or WEIGHTS_FILE)
    if not path.is_file():
        raise UserError(f"tiny-clip weights {path} are missing; reinstall cl-bench or run python tools/pretrain_tiny_clip.py (in a clone of the repository)")
    return str(path)


def load(params: dict[str, Any], weights):
    """The shipped tiny-clip (or `pretrained`, a safetensors file of the same architecture).

    `weights` is the run plan's `Weights(path, sha256)`: the file was hashed once, when the run was planned.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config()
    path = Path(weights.path)
    if path.resolve() == WEIGHTS_FILE and weights.sha256 != config["weights_sha256"]:
        raise UserError(f"tiny-clip weights {path} do not match their recorded sha256 (corrupt or edited); reinstall cl-bench")
    clip = build_clip(config["arch"])
    try:
        state = load_file(str(path))
        clip.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise UserError(f"cannot load tiny-clip weights from {path}: {str(exc).splitlines()[0]}") from exc
    return wrap(clip, config["arch"], weights.sha256)
