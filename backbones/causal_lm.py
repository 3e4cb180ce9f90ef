"""`CausalLM`: a Hugging Face causal language model under the model contract (continual instruction tuning).

Batches hold token ids made by `encode_examples`, with -1 where a row is padded (on the left, so
every prompt ends where generation starts): this keeps the attention mask in the ids whatever
the tokenizer's pad token is.

- Training: input BOS + prompt + answer + EOS, labels -100 on BOS, the prompt and the padding, so
  the loss is the cross-entropy of the answer tokens only (TRACE's setting).
- Evaluation: greedy decoding of each prompt (the stream's `decoding` settings: TRACE uses a
  repetition penalty of 1.2 and no repeated 3-grams), up to the task's `max_new_tokens`; the
  cell's scorer decodes the outputs to text and applies the task's scorer (accuracy, ROUGE-L, ...).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench import AdaptableLayer, Backbone, CellScorer, TaskContext, UserError

# Layer kinds a method may name, and the attribute each is in Llama-style decoder blocks (Llama,
# Gemma, Mistral, Qwen): q, k, v, out in `self_attn`, gate, up, down in `mlp`. Any other name is
# taken as the attribute name of a Linear in the block (e.g. "q_proj").
LAYER_ATTRS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "o_proj", "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
DEFAULT_KINDS = ("q", "k", "v", "out")
TOWERS = ("decoder",)
PAD = -1  # the id that marks padding in a batch; never a real token
IGNORE = -100  # labels the loss skips (PyTorch's and Hugging Face's convention)


class CausalLM(Backbone):
    """A decoder-only language model with its tokenizer; answers are generated and scored per task."""

    kind = "causal-lm"

    def __init__(self, lm: nn.Module, tokenizer, *, name: str, weights_sha256: str | None = None, max_prompt_tokens: int = 1024, max_answer_tokens: int = 512) -> None:
        super().__init__()
        if tokenizer.eos_token_id is None:
            raise UserError(f"backbone {name}: its tokenizer has no end-of-sequence token; use a tokenizer with one")
        self.lm: Any = lm  # a Hugging Face causal LM: generate() and the rest are untyped for mypy
        self.tokenizer = tokenizer
        self.backbone_name = name
        self.weights_sha256 = weights_sha256
        self.max_prompt_tokens = max_prompt_tokens
        self.max_answer_tokens = max_answer_tokens
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.eos = tokenizer.eos_token_id
        self.filler = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos  # what a padded position embeds
        self.decoding: dict[str, Any] = {}
        self.generation: dict[tuple[str, int], Any] = {}
        self.max_new_tokens = 16
        self._context: TaskContext | None = None

    # ------------------------------------------------------------------ data

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_examples(self, examples: Sequence[Mapping[str, str]], split: str) -> tuple[Tensor, Tensor]:
        """{prompt, answer} examples as left-padded token ids (PAD = -1 marks padding).

        "train": (BOS + prompt + answer + EOS, labels: the answer and EOS, -100 elsewhere);
        "test" (or "control"): (BOS + prompt, zeros). A prompt longer than `max_prompt_tokens`
        keeps its last tokens (the question is at its end); an answer keeps its first
        `max_answer_tokens` tokens.
        """
        rows, labels = [], []
        for example in examples:
            prompt = self.bos + self._ids(example["prompt"])[-self.max_prompt_tokens :]
            if split == "train":
                answer = self._ids(example["answer"])[: self.max_answer_tokens] + [self.eos]
                rows.append(prompt + answer)
                labels.append([IGNORE] * len(prompt) + answer)
            else:
                rows.append(prompt)
        width = max(len(r) for r in rows)
        ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows], dtype=torch.long)
        if split != "train":
            return ids, torch.zeros(len(rows), dtype=torch.long)
        return ids, torch.tensor([[IGNORE] * (width - len(r)) + r for r in labels], dtype=torch.long)

    def _inputs(self, ids: Tensor) -> dict[str, Tensor]:
        mask = (ids != PAD).long()
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # left padding: every row starts at position 0
        return {"input_ids": ids.masked_fill(ids == PAD, self.filler), "attention_mask": mask, "position_ids": positions}

    # ------------------------------------------------------------------ layers and towers

    def decoder_blocks(self) -> list[nn.Module]:
        inner = getattr(self.lm, "model", None)
        blocks = getattr(inner, "layers", None)
        if blocks is None:
            raise UserError(f"backbone {self.backbone_name}: {type(self.lm).__name__} has no model.layers (Llama-style decoder blocks); cl_bench adapts Llama, Gemma, Mistral and Qwen models")
        return list(blocks)

    def adaptable_layers(self, towers: Sequence[str] = TOWERS, layers: Sequence[str] = DEFAULT_KINDS) -> list[AdaptableLayer]:
        """The named Linears of every decoder block: q, k, v, out, gate, up, down or an attribute name."""
        unknown = [t for t in towers if t not in TOWERS]
        if unknown:
            raise UserError(f"unknown tower {unknown[0]!r} for a language model; its one tower is 'decoder'")
        selected = []
        for index, block in enumerate(self.decoder_blocks()):
            found = {name.rsplit(".", 1)[-1]: (name, module) for name, module in block.named_modules() if isinstance(module, nn.Linear)}
            for kind in layers:
                attr = LAYER_ATTRS.get(kind, kind)
                if attr not in found:
                    choices = ", ".join([*LAYER_ATTRS, *sorted(set(found) - set(LAYER_ATTRS.values()))])
                    raise UserError(f"layer kind {kind!r} is not a Linear of {self.backbone_name}'s decoder blocks; choose from {choices}")
                qualified, _ = found[attr]
                parent = block.get_submodule(qualified.rpartition(".")[0]) if "." in qualified else block
                selected.append(AdaptableLayer(f"lm.model.layers.{index}.{qualified}", "decoder", index, kind, parent, attr))
        return selected

    def tower_parameters(self, tower: str) -> Iterator[nn.Parameter]:
        if tower not in TOWERS:
            raise UserError(f"unknown tower {tower!r} for a language model; its one tower is 'decoder'")
        yield from self.lm.parameters()

    # ------------------------------------------------------------------ the model contract

    def prepare(self, stream) -> None:
        if stream.kind != "generation":
            raise UserError(f"backbone {self.backbone_name} is a language model; stream {stream.name} is not a text stream (use an instruct stream)")
        from cl_bench import get_scorer

        for split, records in (("test", stream.generation), ("control", stream.control_generation)):
            for index, record in enumerate(records):
                get_scorer(record.scorer)  # an unknown name fails here, before any training
                self.generation[(split, index)] = record
        self.decoding = dict(stream.decoding)

    def set_task_context(self, context: TaskContext) -> None:
        self._context = context
        record = self.generation.get((context.split, context.task))
        if record is not None:
            self.max_new_tokens = record.max_new_tokens

    def forward(self, ids: Tensor) -> Tensor:
        """Logits (batch, length, vocabulary) in training; generated ids (batch, max_new_tokens) in evaluation."""
        if self.training:
            return self.lm(**self._inputs(ids)).logits
        return self.generate(ids, self.max_new_tokens)

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy decoding of each prompt; positions after EOS (and after an early stop) are PAD."""
        inputs = self._inputs(ids)
        out = self.lm.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=float(self.decoding.get("repetition_penalty", 1.0)),
            no_repeat_ngram_size=int(self.decoding.get("no_repeat_ngram_size", 0)),
            eos_token_id=self.eos,
            pad_token_id=self.filler,
        )
        new = out[:, ids.shape[1] :]
        ended = (new == self.eos).long().cumsum(-1) > 0  # the EOS and all after it
        new = new.masked_fill(ended, PAD)
        return F.pad(new, (0, max_new_tokens - new.shape[1]), value=PAD)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy of each next token where the label is not -100: the answer tokens only."""
        logits = outputs[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, 1:].reshape(-1), ignore_index=IGNORE)

    def decode(self, generated: Tensor) -> list[str]:
        return [self.tokenizer.decode([t for t in row if t != PAD], skip_special_tokens=True) for row in generated.tolist()]

    def scorer(self, context: TaskContext) -> CellScorer:
        record = self.generation.get((context.split, context.task))
        if record is None:
            raise UserError(f"backbone {self.backbone_name}: no text set {context.split} {context.task}; prepare() was not called with this stream")
        return TextScorer(self, record)


class TextScorer(CellScorer):
    """One text test set's cell: decodes the generated answers and scores them against the
    references. Every text scorer is a mean of per-example scores: the cell is `mean_score` of
    them (in example order), the same number as the task's scorer gives, and `outcomes()` gives
    them for the result file."""

    def __init__(self, model: CausalLM, record) -> None:
        from cl_bench import get_scorer

        self.model, self.record, self.each = model, record, get_scorer(record.scorer, per_example=True)
        self.predictions: dict[int, str] = {}
        self._scores: list[float] | None = None

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        for index, text in zip(targets.tolist(), self.model.decode(outputs)):
            self.predictions[int(index)] = text
        self._scores = None

    def outcomes(self) -> list[float]:
        """Each example's score in [0, 1], in example order."""
        if self._scores is None:
            order = sorted(self.predictions)
            predictions = [self.predictions[i] for i in order]
            references = [self.record.references[i] for i in order]
            sources = [self.record.sources[i] for i in order]
            self._scores = [float(v) for v in self.each(predictions, references, sources)]
        return self._scores

    def result(self) -> float:
        return float(self.mean_score(self.outcomes()))


# config.json fields that size the model, with the largest value any real model has (a typo or a
# forged value would otherwise allocate until the process dies).
CONFIG_LIMITS = {
    "vocab_size": 1 << 22,
    "hidden_size": 1 << 16,
    "intermediate_size": 1 << 18,
    "num_hidden_layers": 1 << 10,
    "num_attention_heads": 1 << 10,
    "num_key_value_heads": 1 << 10,
    "max_position_embeddings": 1 << 24,
}
MAX_CONFIG_BYTES = 1 << 20


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_model_config(folder: str) -> None:
    """Refuse, in one line, a config.json that would run the folder's code, load a quantized model
    or size a model beyond any real one; everything else is left to transformers."""
    import json
    from pathlib import Path

    path = Path(folder) / "config.json"
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path} is over 1 MiB; a model's config.json is a few KB")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"{path} cannot be read as JSON ({_cut(str(exc) or type(exc).__name__)})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(config).__name__}")
    if "auto_map" in config:
        raise UserError(f"{path} names its own model code (auto_map); cl_bench never runs code from a model folder: use a folder of a model transformers itself implements")
    if "quantization_config" in config:
        raise UserError(f"{path} describes a quantized model (quantization_config); cl_bench loads float32, bfloat16 or float16 weights only")
    for key, highest in CONFIG_LIMITS.items():
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= highest):
            raise UserError(f"{path}: {key} must be an integer from 1 to {highest:,}, got {_cut(repr(value), 80)}")
    index = Path(folder) / "model.safetensors.index.json"
    if index.is_file():  # every shard must be safetensors: a pickle shard would be unpickled
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()) if index.stat().st_size <= 64 * MAX_CONFIG_BYTES else None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError):
            shards = None
        if shards is None or not shards or not all(isinstance(s, str) and s.endswith(".safetensors") and "/" not in s and "\\" not in s for s in shards):
            raise UserError(f"{index} must map every weight to a .safetensors shard in the folder; cl_bench never loads pickled weights")


def load_folder(folder: str, *, name: str, weights_sha256: str | None, params: Mapping[str, Any]) -> CausalLM:
    """A Hugging Face model folder (config, weights, tokenizer) as a `CausalLM`, from local files only."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download: a missing file is an error
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load says nothing; the run has its own

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(params.get("dtype", "float32"))
    if dtype is None:
        raise UserError(f"backbone.dtype must be float32, bfloat16 or float16, not {params.get('dtype')!r}")
    check_model_config(folder)
    try:
        # A folder is untrusted: never its code (trust_remote_code=False, and auto_map refused above).
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        loaded: Any = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype, trust_remote_code=False, output_loading_info=True)
        lm, info = loaded  # with output_loading_info, (model, what did not load)
    except Exception as exc:  # a malformed folder fails deep in transformers, tokenizers or safetensors
        first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load a language model from {folder}: {_cut(first)}") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing or info.get("mismatched_keys"):
        what = f"{len(missing)} tensor(s) missing (first {missing[0]})" if missing else "tensors of the wrong shape"
        raise UserError(f"{folder}: the weights do not fill the model ({what}); a model left partly random would train and score without a word")
    lm.generation_config.do_sample = False  # greedy decoding; a folder's sampling settings would only warn
    for key in ("temperature", "top_p", "top_k"):
        setattr(lm.generation_config, key, None)
    return CausalLM(lm, tokenizer, name=name, weights_sha256=weights_sha256, max_prompt_tokens=int(params.get("max_prompt_tokens", 1024)), max_answer_tokens=int(params.get("max_answer_tokens", 512)))
