"""The built-in language-model backbones: `tiny-lm` (shipped) and `hf-causal-lm` (a local folder).

Finding the weights file imports nothing heavy (`clbench ls` asks for it); loading imports torch
and transformers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cl_bench import UserError, Weights

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .causal_lm import CausalLM


def tiny_lm_weights(params: Mapping[str, Any]) -> str:
    """The shipped tiny-lm's weights file, or those of `pretrained` (a folder of the same kind)."""
    from .tiny_lm import SHIPPED_DIR

    given = params.get("pretrained")
    weights = weights_file_of(given or str(SHIPPED_DIR), "tiny-lm")
    # The shipped folder is identified by its weights (record.json checks every file at load); a
    # folder of the user's by all its files: its config and tokenizer decide the numbers too.
    return given if given else weights


def load_tiny_lm(params: dict[str, Any], weights: Weights) -> CausalLM:
    """tiny-lm from the package (its files checked against the sha256s of record.json) or from `pretrained`."""
    from .causal_lm import load_folder
    from .tiny_lm import SHIPPED_DIR, check_files

    folder = Path(weights.path) if Path(weights.path).is_dir() else Path(weights.path).parent
    if folder.resolve() == SHIPPED_DIR.resolve():
        check_files(folder)
    return load_folder(str(folder), name="tiny-lm", weights_sha256=weights.sha256, params=params)


def hf_weights(params: Mapping[str, Any]) -> str:
    """The model folder itself: the run id hashes every file in it (config, tokenizer, weights)."""
    folder = params.get("pretrained") or ""
    weights_file_of(folder, "backbone hf-causal-lm")  # refuses a folder without weights
    return folder


def load_hf(params: dict[str, Any], weights: Weights) -> CausalLM:
    """Any Llama-style causal LM saved with save_pretrained: config, safetensors weights, tokenizer."""
    from .causal_lm import load_folder

    folder = Path(weights.path) if Path(weights.path).is_dir() else Path(weights.path).parent
    if not (folder / "config.json").is_file():
        raise UserError(f"backbone hf-causal-lm: {folder} has no config.json; point --pretrained at a Hugging Face model folder")
    return load_folder(str(folder), name="hf-causal-lm", weights_sha256=weights.sha256, params=params)


def weights_file_of(folder: str, what: str) -> str:
    """The file whose sha256 identifies a model folder: its single weights file, or its shard index."""
    root = Path(folder)
    if not folder or not root.is_dir():
        raise UserError(f"{what}: --pretrained must name a local Hugging Face model folder (config.json, weights, tokenizer), got {folder!r}; cl_bench never downloads")
    for candidate in ("model.safetensors", "model.safetensors.index.json"):
        if (root / candidate).is_file():
            return str(root / candidate)
    raise UserError(f"{what}: {root} holds neither model.safetensors nor model.safetensors.index.json; save the model with save_pretrained(safe_serialization=True)")
