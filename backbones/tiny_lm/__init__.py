"""tiny-lm, the embedded language-model backbone: a ~0.9M-parameter `LlamaForCausalLM` that ships in the package.

The folder is a Hugging Face model folder (`config.json`, `generation_config.json`,
`model.safetensors`, `tokenizer.json`, `tokenizer_config.json`) written by
`tools/pretrain_tiny_lm.py`, plus `record.json`: how the files were made and the sha256 of each.

The tokenizer is a byte-level BPE with `<pad>` (0), `<s>` (1, BOS) and `</s>` (2, EOS) and left
padding; encoding a text prepends `<s>` unless `add_special_tokens=False`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cl_bench import UserError, file_sha256

SHIPPED_DIR = Path(__file__).resolve().parent
RECORD_FILE = "record.json"
FIX = "reinstall cl-bench or run python tools/pretrain_tiny_lm.py (in a clone of the repository)"


def read_record(folder: Path | None = None) -> dict[str, Any]:
    """The folder's `record.json` (how its files were made)."""
    path = Path(folder or SHIPPED_DIR) / RECORD_FILE
    if not path.is_file():
        raise UserError(f"tiny-lm file {path} is missing; {FIX}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"tiny-lm file {path} is not readable JSON ({str(exc).splitlines()[0]}); {FIX}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), dict) or not record["sha256"]:
        raise UserError(f"tiny-lm file {path} lists no sha256 of the model files; {FIX}")
    return record


def check_files(folder: Path) -> None:
    """Check every file that `record.json` lists against its sha256; one-line `UserError` if one is missing or differs."""
    folder = Path(folder)
    for name, expected in sorted(read_record(folder)["sha256"].items()):
        path = folder / name
        if not path.is_file():
            raise UserError(f"tiny-lm file {path} is missing; {FIX}")
        if file_sha256(path) != expected:
            raise UserError(f"tiny-lm file {path} does not match its sha256 in {RECORD_FILE} (corrupt or edited); {FIX}")


def load(folder: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from `folder` (default: the shipped tiny-lm, whose files are checked first).

    Loads offline with `AutoModelForCausalLM` / `AutoTokenizer` (`local_files_only=True`); the model
    is in eval mode, fp32.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder) if folder is not None else SHIPPED_DIR
    if not path.is_dir():
        raise UserError(f"tiny-lm folder {path} does not exist; pass a folder written by tools/pretrain_tiny_lm.py")
    if path.resolve() == SHIPPED_DIR:
        check_files(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load tiny-lm from {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    model.eval()
    return model, tokenizer
