"""`CausalLM`: a Hugging Face causal language model under the model contract (continual instruction tuning).

Batches hold token ids made by `encode_examples`, with -1 where a row is padded (on the left, so
every prompt ends where generation starts): this keeps the attention mask in the ids whatever
the tokenizer's pad token is.

- Training: one tokenisation of prompt + answer, truncated from the left to max_prompt_tokens +
  max_answer_tokens (1,536), EOS and then BOS added while under that limit, the labels the last
  len(answer + EOS) positions (TRACE's collator, in MoRAM's code and the original alike); a task
  whose prompts keep their start (MoRAM's MeetingBank) is laid out as MoRAM's code lays it out.
  The loss is the cross-entropy of the labelled tokens: each example's mean, averaged over the
  examples (`loss_weighting="example"`, as TRACE's batch of one per device weighs them), or the
  mean over every labelled token of the batch ("token").
- Evaluation: each prompt (truncated the same way, BOS only under the limit) is continued by
  `generate` with the stream's `decoding` settings (MoRAM's: greedy, repetition penalty 1.2, no
  repeated 3-gram; the original TRACE's: sampling at temperature 0.1, seeded per cell), up to
  the task's `max_new_tokens`; the cell's scorer decodes the outputs to text and applies the
  task's scorer (accuracy, ROUGE-L, ...).
- Prompts (`set_prefix`): a method may install a function that returns vectors to put before
  each row's input embeddings (soft prompts: L2P, DualPrompt). Training and generation both see
  them, with attention mask 1 and positions counted from them; they carry no label.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
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
LOSS_WEIGHTINGS = ("example", "token")
# The keys of a stream's `decoding` that generate() reads, and what each defaults to (greedy, no penalty).
# A prefix function: (ids, PAD = -1 marking padding; their input embeddings) -> (batch, P, width)
# vectors put before each row's embeddings (P may be 0: nothing is added).
Prefix = Callable[[Tensor, Tensor], Tensor]
DECODING_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


class CausalLM(Backbone):
    """A decoder-only language model with its tokenizer; answers are generated and scored per task."""

    kind = "causal-lm"

    def __init__(
        self,
        lm: nn.Module,
        tokenizer,
        *,
        name: str,
        weights_sha256: str | None = None,
        max_prompt_tokens: int = 1024,
        max_answer_tokens: int = 512,
        loss_weighting: str = "example",
    ) -> None:
        super().__init__()
        if tokenizer.eos_token_id is None:
            raise UserError(f"backbone {name}: its tokenizer has no end-of-sequence token; use a tokenizer with one")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise UserError(f"backbone.loss_weighting must be example or token, not {loss_weighting!r}")
        for key, value in (("max_prompt_tokens", max_prompt_tokens), ("max_answer_tokens", max_answer_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"backbone.{key} must be a positive integer, not {value!r}")
        self.lm: Any = lm  # a Hugging Face causal LM: generate() and the rest are untyped for mypy
        self.tokenizer = tokenizer
        self.backbone_name = name
        self.weights_sha256 = weights_sha256
        self.max_prompt_tokens = max_prompt_tokens
        self.max_answer_tokens = max_answer_tokens
        self.loss_weighting = loss_weighting
        self.eos = tokenizer.eos_token_id
        # TRACE's tokenizer set-up (MoRAM TRACE/utils/utils.py:70-71): a tokenizer without BOS uses EOS as BOS
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos
        self.filler = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos  # what a padded position embeds
        self.decoding: dict[str, Any] = {}
        self.generation: dict[tuple[str, int], Any] = {}
        self.max_new_tokens = 16
        self._context: TaskContext | None = None
        self._batches = 0  # batches generated in the current cell (each sampled batch gets its own seed)
        self.prefix: Prefix | None = None
        self.prompt_prefixes: dict[int, list[int]] = {}  # in-context demonstrations per task (set_prompt_prefixes)
        self.prefixed_prompt_tokens = max_prompt_tokens

    # ------------------------------------------------------------------ data

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _tokenize(self, text: str, limit: int, *, bos: bool, eos: bool, keep_start: bool = False) -> list[int]:
        """TRACE's collator `tokenize` (MoRAM TRACE/utils/data/data_collator.py:52-94, BeyonderXX/TRACE
        :31-59): the text's tokens cut to `limit` (keeping its end, or its start with `keep_start`),
        then EOS appended if still under the limit, then BOS prepended if still under it."""
        ids = self._ids(text)
        ids = ids[:limit] if keep_start else ids[max(0, len(ids) - limit) :]
        if eos and len(ids) < limit:
            ids = ids + [self.eos]
        if bos and len(ids) < limit:
            ids = [self.bos_id] + ids
        return ids

    def _training_row(self, prompt: str, answer: str, prompt_limit: int, keep_prompt_start: bool) -> tuple[list[int], int]:
        """One training sequence and how many of its last positions are labels."""
        limit = prompt_limit + self.max_answer_tokens
        if not keep_prompt_start:
            # every task but MoRAM's MeetingBank (data_collator.py:164-175): prompt + answer tokenised
            # once and cut from the left; the labels are as many last positions as the answer alone
            # has tokens with its EOS (off by one at the join where the two tokenise differently, as there)
            row = self._tokenize(prompt + answer, limit, bos=True, eos=True)
            return row, min(len(row), len(self._tokenize(answer, limit, bos=False, eos=True)))
        # MoRAM's MeetingBank (data_collator.py:96-137): the answer keeps its last max_answer_tokens
        # + 2 tokens (+ EOS); the prompt, after BOS, keeps its start in the room that leaves
        label = self._tokenize(answer, min(limit, max(self.max_answer_tokens + 2, 32)), bos=False, eos=True)
        room = max(1, limit - 1 - len(label))
        body = self._ids(prompt)[:room]
        over = 1 + len(body) + len(label) - limit
        if over > 0:
            body = body[: max(0, len(body) - over)]
        return [self.bos_id] + body + label, len(label)

    def encode_examples(
        self, examples: Sequence[Mapping[str, str]], split: str, *, max_prompt_tokens: int | None = None, keep_prompt_start: bool = False
    ) -> tuple[Tensor, Tensor]:
        """{prompt, answer} examples as left-padded token ids (PAD = -1 marks padding), truncated as TRACE's collator does.

        "train": (prompt + answer tokenised once, cut from the left to `max_prompt_tokens` +
        `max_answer_tokens`, EOS then BOS added while under that; labels: its last len(answer +
        EOS) positions, -100 elsewhere); "test" (or "control"): (the prompt cut from the left to
        `max_prompt_tokens`, BOS added if under it; zeros). `max_prompt_tokens` (None: the
        backbone's) and `keep_prompt_start` (MoRAM's MeetingBank: prompts keep their start; a
        training sequence is BOS + the prompt's start + the answer's last max_answer_tokens + 2
        tokens and EOS) come from the stream's task.
        """
        prompt_limit = self.max_prompt_tokens if max_prompt_tokens is None else max_prompt_tokens
        rows, labels = [], []
        for example in examples:
            if split == "train":
                row, labelled = self._training_row(example["prompt"], example["answer"], prompt_limit, keep_prompt_start)
                rows.append(row)
                labels.append([IGNORE] * (len(row) - labelled) + row[len(row) - labelled :])
            else:
                rows.append(self._tokenize(example["prompt"], prompt_limit, bos=True, eos=False, keep_start=keep_prompt_start))
        width = max(len(r) for r in rows)
        ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows], dtype=torch.long)
        if split != "train":
            return ids, torch.zeros(len(rows), dtype=torch.long)
        return ids, torch.tensor([[IGNORE] * (width - len(r)) + r for r in labels], dtype=torch.long)

    def _inputs(self, ids: Tensor) -> dict[str, Tensor]:
        mask = (ids != PAD).long()
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # left padding: every row starts at position 0
        return {"input_ids": ids.masked_fill(ids == PAD, self.filler), "attention_mask": mask, "position_ids": positions}

    def set_prefix(self, prefix: Prefix | None) -> None:
        """Let a method put soft prompts before every row (None removes them).

        `prefix(ids, embeddings)` receives the batch's ids (PAD = -1 where a row is padded) and
        their input embeddings (batch, length, width) and returns (batch, P, width) vectors. They
        go before the row, padding included (as TRACE's L2P puts them), with attention mask 1;
        positions count from the first of them. In training the P prompt positions' logits are
        dropped, so `forward` returns logits aligned with the ids and the prompts carry no label
        (as label -100 would); `generate` feeds the prompts to the model's first step. A prefix
        of 0 vectors leaves the model exactly as without one.
        """
        self.prefix = prefix

    def _prefixed(self, ids: Tensor, inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
        """The inputs with the prefix's vectors before each row, and how many there are."""
        assert self.prefix is not None
        embeds = self.lm.get_input_embeddings()(inputs["input_ids"])
        prompts = self.prefix(ids, embeds)
        count = prompts.shape[1]
        if count == 0:
            return inputs, 0
        ones = torch.ones(ids.shape[0], count, dtype=inputs["attention_mask"].dtype, device=ids.device)
        mask = torch.cat([ones, inputs["attention_mask"]], dim=1)
        return {
            "inputs_embeds": torch.cat([prompts.to(embeds.dtype), embeds], dim=1),
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp_min(0),
        }, count

    # ------------------------------------------------------------------ layers and towers

    def decoder_blocks(self) -> list[nn.Module]:
        inner = getattr(self.lm, "model", None)
        blocks = getattr(inner, "layers", None)
        if blocks is None:
            raise UserError(f"backbone {self.backbone_name}: {type(self.lm).__name__} has no model.layers (Llama-style decoder blocks); cl_bench adapts Llama, Gemma, Mistral and Qwen models")
        return list(blocks)

    def shard_units(self) -> list[nn.Module]:
        return self.decoder_blocks()

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
        self.prepare_decoding(stream.decoding)

    def prepare_decoding(self, decoding: Mapping[str, Any]) -> None:
        unknown = sorted(set(decoding) - set(DECODING_DEFAULTS))
        if unknown:
            raise UserError(f"backbone {self.backbone_name}: unknown decoding setting {unknown[0]!r}; known: {', '.join(DECODING_DEFAULTS)}")
        self.decoding = {**DECODING_DEFAULTS, **decoding}

    def set_task_context(self, context: TaskContext) -> None:
        self._context = context
        self._batches = context.first_batch  # a process's share of a cell starts at its own place
        record = self.generation.get((context.split, context.task))
        if record is not None:
            self.max_new_tokens = record.max_new_tokens

    def forward(self, ids: Tensor) -> Tensor:
        """Logits (batch, length, vocabulary) in training; generated ids (batch, max_new_tokens) in evaluation."""
        if self.training:
            inputs = self._inputs(ids)
            if self.prefix is None:
                return self.lm(**inputs).logits
            prefixed, count = self._prefixed(ids, inputs)
            return self.lm(**prefixed).logits[:, count:]
        context = self._context
        if context is not None and context.split == "test" and self.prompt_prefixes.get(context.task):
            ids = self.with_prefix(ids, self.prompt_prefixes[context.task], self.prefixed_prompt_tokens)
        return self.generate(ids, self.max_new_tokens)

    def set_prompt_prefixes(self, prefixes: Mapping[int, Sequence[int]], max_prompt_tokens: int) -> None:
        """Token ids put before every test prompt of a task (a method's in-context demonstrations,
        `icl`), keyed by task index; the prefixed prompts are cut to `max_prompt_tokens` (see
        `with_prefix`). Control sets are never prefixed."""
        self.prompt_prefixes = {int(k): list(v) for k, v in prefixes.items()}
        self.prefixed_prompt_tokens = int(max_prompt_tokens)

    def with_prefix(self, ids: Tensor, prefix: Sequence[int], limit: int) -> Tensor:
        """Each prompt row (left-padded, BOS first where it has one) as BOS + prefix + the prompt's
        own tokens, cut from the left to `limit` tokens with BOS only under it (TRACE's collator
        with its ICL prompt, MoRAM TRACE/utils/data/data_collator.py:177-193), left-padded again."""
        rows = []
        for row in ids.tolist():
            tokens = [t for t in row if t != PAD]
            if tokens and tokens[0] == self.bos_id:
                tokens = tokens[1:]
            tokens = (list(prefix) + tokens)[-limit:]
            rows.append(([self.bos_id] if len(tokens) < limit else []) + tokens)
        width = max(len(r) for r in rows)
        return torch.tensor([[PAD] * (width - len(r)) + r for r in rows], dtype=ids.dtype, device=ids.device)

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int) -> Tensor:
        """Each prompt continued by the decoding settings (greedy by default); positions after EOS
        (and after an early stop) are PAD. Sampling draws from a generator seeded by the cell's
        seed and the batch's place in the cell, so a run repeats itself, resumed or not."""
        inputs = self._inputs(ids)
        given: dict[str, Tensor] = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        if self.prefix is not None:
            prefixed, count = self._prefixed(ids, inputs)
            if count:
                # the prompt positions' ids (what repetition penalties see) are BOS, never generated
                placeholder = torch.full((ids.shape[0], count), self.bos_id, dtype=ids.dtype, device=ids.device)
                given = {
                    "input_ids": torch.cat([placeholder, inputs["input_ids"]], dim=1),
                    "inputs_embeds": prefixed["inputs_embeds"],
                    "attention_mask": prefixed["attention_mask"],
                }
        settings = {**DECODING_DEFAULTS, **self.decoding}
        sampling = bool(settings["do_sample"])
        options: dict[str, Any] = {"do_sample": sampling, "num_beams": 1}
        if sampling:
            options.update(temperature=float(settings["temperature"]), top_k=int(settings["top_k"]), top_p=float(settings["top_p"]))
        context: Any = contextlib.nullcontext()
        if sampling:  # the global generators are put back afterwards: training's draws do not move
            context = torch.random.fork_rng(devices=[ids.device] if ids.is_cuda else [])
        with context:
            if sampling:
                torch.manual_seed(self._sample_seed())
            self._batches += 1
            out = self.lm.generate(
                **given,
                max_new_tokens=max_new_tokens,
                repetition_penalty=float(settings["repetition_penalty"]),
                no_repeat_ngram_size=int(settings["no_repeat_ngram_size"]),
                eos_token_id=self.eos,
                pad_token_id=self.filler,
                **options,
            )
        new = out[:, given["input_ids"].shape[1] :]
        ended = (new == self.eos).long().cumsum(-1) > 0  # the EOS and all after it
        new = new.masked_fill(ended, PAD)
        return F.pad(new, (0, max_new_tokens - new.shape[1]), value=PAD)

    def _sample_seed(self) -> int:
        """The seed of the next sampled batch: from the cell's seed (the run's seed, the row, the
        cell; the global seed outside a run) and the batch's place in the cell."""
        cell = self._context.seed if self._context is not None and self._context.seed is not None else torch.initial_seed()
        digest = hashlib.sha256(f"{cell}:sample:{self._batches}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy of each next token where the label is not -100 (the answer tokens): each
        example's mean, averaged over the examples ("example"), or the mean over all of them ("token")."""
        logits = outputs[:, :-1].float()
        labels = targets[:, 1:]
        if self.loss_weighting == "token":
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="none").view(labels.shape)
        counts = (labels != IGNORE).sum(dim=1)
        labelled = counts > 0
        if not bool(labelled.any()):
            return per_token.sum() * 0.0  # no answer token in the batch: a zero with a gradient path
        return (per_token.sum(dim=1)[labelled] / counts[labelled]).mean()

    def decode(self, generated: Tensor) -> list[str]:
        # as TRACE decodes (MoRAM TRACE/inference/infer_part.py, BeyonderXX/TRACE infer_single.py:193-194)
        return [self.tokenizer.decode([t for t in row if t != PAD], skip_special_tokens=True, clean_up_tokenization_spaces=False) for row in generated.tolist()]

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
    return CausalLM(
        lm,
        tokenizer,
        name=name,
        weights_sha256=weights_sha256,
        max_prompt_tokens=params.get("max_prompt_tokens", 1024),
        max_answer_tokens=params.get("max_answer_tokens", 512),
        loss_weighting=params.get("loss_weighting", "example"),
    )
