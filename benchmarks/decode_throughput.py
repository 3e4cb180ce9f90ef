"""Decode throughput of the language-model evaluation, against transformers' generate, with and without length buckets.

    python benchmarks/decode_throughput.py [--batch-sizes 1,2,4,8,16,32] [--repeats 5] [--decoding both] [--method zeroshot] [--threads 1]

tiny-lm decodes the test prompts of `embedded-instruct` (its four tasks and its control set, each
up to its own `max_new_tokens`), at each batch size, four ways:

    (a) ours       `CausalLM.generate` on the batches the evaluation forms: test-set order, each
                   batch a slice of the set's prompt tensor (left-padded to the set's longest prompt)
    (b) plain      transformers' `lm.generate` on the same batches with the same settings, called
                   directly (input ids and attention mask made beforehand): our wrapper's overhead
    (a') trimmed   as (a), each batch trimmed to its own longest prompt
    (c) bucketed   as (a'), the prompts sorted by length first (stable), outputs put back in order

Decoding settings (`--decoding`): `stream` is embedded-instruct's own (plain greedy: it sets no
penalty), `trace` is TRACE's (repetition penalty 1.2, no repeated 3-grams), `both` measures both.
Greedy, EOS stops a row, the whole batch stops when every row has stopped. With `--method
seq-lora` (or another method) tiny-lm is first trained on the four tasks as `clbench run` would
(the method's tiny-lm profile), so that the exactness checks also see fine-tuned weights.

Reported per batch size: generated tokens per second (each row's tokens up to and including its
EOS, or `max_new_tokens` if it has none; the filler after EOS is not counted) over the median
time of `--repeats` passes over all five sets, the four ways interleaved set by set in rotating
order, and the time ratios of the ways, pass by pass (median of the paired ratios);
the padding share of the prompt positions; the share of decode steps spent on rows that had
already stopped; whether (a'), (b) and (c) decode exactly (a)'s texts; and from untimed passes,
over every generated token up to its EOS: the largest difference between (a)'s and (c)'s logits,
the largest between (a)'s and (a)'s with each set in one batch (what the evaluation does at its
default batch size, 256, on sets of 100), and the smallest margin of a greedy choice of (a) (top
score minus the runner-up, after the penalties).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
from tabulate import tabulate

from cl_bench import RunConfig, build, plan
from cl_bench.backbones.causal_lm import PAD
from cl_bench.config.registry import Registry
from cl_bench.running.runner import quiet_third_party_warnings

quiet_third_party_warnings()

from cl_bench.running.strategy import TensorBatches  # noqa: E402

TRACE_DECODING = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}
WAYS = ("ours", "plain", "trimmed", "bucketed")


@dataclass
class TestSet:
    name: str
    ids: torch.Tensor  # (examples, longest prompt), PAD on the left: the set's tensor as the evaluation holds it
    max_new_tokens: int

    @property
    def lengths(self) -> torch.Tensor:
        return (self.ids != PAD).sum(1)


@dataclass
class Batch:
    rows: torch.Tensor  # which examples of the set, in batch order
    ids: torch.Tensor  # their prompts, PAD on the left
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # (b): input ids and attention mask


def load(test_size: int, method: str):
    """tiny-lm (in eval mode) and embedded-instruct's test and control sets, as `clbench run` builds
    them; trained on every task by `method` first, unless it is zeroshot (the shipped weights)."""
    config = RunConfig(method=method, scenario="embedded-instruct", backbone="tiny-lm", device="cpu", progress=False, threads=torch.get_num_threads())
    config.set("scenario.test_size", test_size)
    config.set("scenario.control_size", test_size)
    parts = build(plan(config, Registry()))
    model, stream = parts.model, parts.stream
    if method != "zeroshot":
        for experience in stream.benchmark.streams["train"]:
            parts.strategy.train(experience)
    model.eval()
    sets = []
    for split, names, records in (("test", stream.task_names, stream.generation), ("control", stream.control_names, stream.control_generation)):
        for name, experience, record in zip(names, stream.benchmark.streams[split], records):
            loader = torch.utils.data.DataLoader(experience.dataset, batch_size=len(experience.dataset), shuffle=False)
            ids = next(iter(loader))[0]
            sets.append(TestSet(name, ids, record.max_new_tokens))
    return model, stream, sets


def batches(model, test_set: TestSet, size: int, way: str) -> list[Batch]:
    """The batches of one way of decoding `test_set` (made before the clock starts)."""
    if way in ("ours", "plain"):
        formed = [Batch(rows, ids) for ids, rows in TensorBatches(test_set.ids, torch.arange(len(test_set.ids)), size)]
    else:
        lengths = test_set.lengths
        order = torch.argsort(lengths, stable=True) if way == "bucketed" else torch.arange(len(lengths))
        formed = []
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            formed.append(Batch(rows, test_set.ids[rows][:, test_set.ids.shape[1] - int(lengths[rows].max()) :]))
    if way == "plain":
        for batch in formed:
            inputs = model._inputs(batch.ids)
            batch.inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    return formed


def settings(model) -> dict:
    """The keyword arguments `CausalLM.generate` gives transformers' generate (but max_new_tokens)."""
    return {
        "do_sample": False,
        "num_beams": 1,
        "repetition_penalty": float(model.decoding.get("repetition_penalty", 1.0)),
        "no_repeat_ngram_size": int(model.decoding.get("no_repeat_ngram_size", 0)),
        "eos_token_id": model.eos,
        "pad_token_id": model.filler,
    }


def decode_set(model, test_set: TestSet, formed: list[Batch], way: str) -> tuple[float, list[torch.Tensor]]:
    """Seconds to decode every batch, and each example's generated ids in test-set order, PAD from EOS on
    (as `CausalLM.generate` returns them; (b)'s are made so after the clock stops)."""
    outputs: list[torch.Tensor] = [torch.empty(0)] * len(test_set.ids)
    kwargs = settings(model)
    with torch.no_grad():
        start = time.perf_counter()
        if way == "plain":
            generated = [model.lm.generate(**batch.inputs, max_new_tokens=test_set.max_new_tokens, **kwargs)[:, batch.ids.shape[1] :] for batch in formed]
        else:
            generated = [model.generate(batch.ids, test_set.max_new_tokens) for batch in formed]
        seconds = time.perf_counter() - start
    if way == "plain":
        generated = [new.masked_fill((new == model.eos).cumsum(-1) > 0, PAD) for new in generated]
        generated = [torch.nn.functional.pad(new, (0, test_set.max_new_tokens - new.shape[1]), value=PAD) for new in generated]
    for batch, new in zip(formed, generated):
        for row, out in zip(batch.rows.tolist(), new):
            outputs[row] = out
    return seconds, outputs


def token_counts(model, outputs: list[torch.Tensor], max_new_tokens: int) -> list[int]:
    """Each row's generated tokens up to and including EOS (all `max_new_tokens` if it has none)."""
    counts = []
    for out in outputs:
        ended = (out == PAD).nonzero()  # where EOS was
        counts.append(min(int(ended[0]) + 1, max_new_tokens) if len(ended) else len(out))
    return counts


def padding(test_set: TestSet, formed: list[Batch], counts: list[int]) -> tuple[int, int, int, int]:
    """(padded prompt positions, prompt positions, decode steps of rows already stopped, decode row-steps)."""
    padded = positions = idle = steps = 0
    for batch in formed:
        padded += int((batch.ids == PAD).sum())
        positions += batch.ids.numel()
        rows = [counts[r] for r in batch.rows.tolist()]
        steps += max(rows) * len(rows)
        idle += max(rows) * len(rows) - sum(rows)
    return padded, positions, idle, steps


def logits(model, test_set: TestSet, size: int, way: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Untimed: each example's logits and scores (after the penalties) at every token it generated, up to its EOS."""
    kwargs = settings(model)
    raw: list[torch.Tensor] = [torch.empty(0)] * len(test_set.ids)
    scores: list[torch.Tensor] = [torch.empty(0)] * len(test_set.ids)
    for batch in batches(model, test_set, size, way):
        inputs = model._inputs(batch.ids)
        with torch.no_grad():
            out = model.lm.generate(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=test_set.max_new_tokens, **kwargs,
                output_logits=True, output_scores=True, return_dict_in_generate=True,
            )
        new = out.sequences[:, batch.ids.shape[1] :]
        counts = token_counts(model, list(new.masked_fill((new == model.eos).cumsum(-1) > 0, PAD)), test_set.max_new_tokens)
        for index, (row, count) in enumerate(zip(batch.rows.tolist(), counts)):
            raw[row] = torch.stack([step[index] for step in out.logits[:count]])
            scores[row] = torch.stack([step[index] for step in out.scores[:count]])
    return raw, scores


def largest_difference(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    """The largest |difference| of two ways' logits, over the tokens both generated."""
    largest = 0.0
    for a, b in zip(first, second):
        steps = min(len(a), len(b))
        largest = max(largest, float((a[:steps] - b[:steps]).abs().max()))
    return largest


def smallest_margin(scores: list[torch.Tensor]) -> float:
    """The smallest lead of a greedy choice over the runner-up."""
    top = [s.topk(2, dim=-1).values for s in scores]
    return min(float((t[:, 0] - t[:, 1]).min()) for t in top)


def measure(model, sets: list[TestSet], size: int, repeats: int, whole: dict[str, list[torch.Tensor]]) -> dict:
    formed = {(s.name, way): batches(model, s, size, way) for s in sets for way in WAYS}
    seconds = {way: [0.0] * repeats for way in WAYS}
    texts: dict[str, list[str]] = {}
    tokens = 0
    counts: dict[tuple[str, str], list[int]] = {}
    for repeat in range(repeats):
        for number, test_set in enumerate(sets):
            shift = (repeat + number) % len(WAYS)
            for way in WAYS[shift:] + WAYS[:shift]:  # rotating order: no way always goes first
                elapsed, outputs = decode_set(model, test_set, formed[(test_set.name, way)], way)
                seconds[way][repeat] += elapsed
                if repeat == 0:
                    counts[(test_set.name, way)] = token_counts(model, outputs, test_set.max_new_tokens)
                    texts.setdefault(way, []).extend(model.decode(torch.stack(outputs)))
                    if way == "ours":
                        tokens += sum(counts[(test_set.name, way)])
    result = {"tokens": tokens, "per_s": {way: tokens / statistics.median(seconds[way]) for way in WAYS}}
    # time ratios paired pass by pass (the ways of one pass ran side by side), then the median
    result["ours/plain"] = statistics.median(a / b for a, b in zip(seconds["ours"], seconds["plain"]))
    result["ours/bucketed"] = statistics.median(a / c for a, c in zip(seconds["ours"], seconds["bucketed"]))
    result["ours/trimmed"] = statistics.median(a / c for a, c in zip(seconds["ours"], seconds["trimmed"]))
    result["same"] = {way: sum(a == b for a, b in zip(texts["ours"], texts[way])) for way in WAYS}
    result["examples"] = len(texts["ours"])
    for way in ("ours", "trimmed", "bucketed"):
        totals = [padding(s, formed[(s.name, way)], counts[(s.name, way)]) for s in sets]
        padded, positions, idle, steps = (sum(column) for column in zip(*totals))
        result[f"pad {way}"], result[f"idle {way}"] = padded / positions, idle / steps
    ours = {s.name: logits(model, s, size, "ours") for s in sets}
    bucketed = {s.name: logits(model, s, size, "bucketed")[0] for s in sets}
    result["difference"] = max(largest_difference(ours[s.name][0], bucketed[s.name]) for s in sets)
    result["batch difference"] = max(largest_difference(ours[s.name][0], whole[s.name]) for s in sets)
    result["margin"] = min(smallest_margin(ours[s.name][1]) for s in sets)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="comma-separated (the evaluation's default is 256: one batch per embedded set)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over every set, per way and batch size")
    parser.add_argument("--decoding", choices=("stream", "trace", "both"), default="both")
    parser.add_argument("--test-size", type=int, default=100, help="examples per test set and in the control set (embedded-instruct's default: 100)")
    parser.add_argument("--method", default="zeroshot", help="train tiny-lm on the four tasks with this method first (its tiny-lm profile); zeroshot: the shipped weights")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, stream, sets = load(args.test_size, args.method)
    decodings = {"stream": dict(stream.decoding), "trace": TRACE_DECODING}
    chosen = ["stream", "trace"] if args.decoding == "both" else [args.decoding]
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    weights = "shipped weights" if args.method == "zeroshot" else f"after {args.method} on every task"
    print(f"tiny-lm ({weights}) on embedded-instruct: {', '.join(f'{s.name} ({len(s.ids)}, up to {s.max_new_tokens} tokens)' for s in sets)}")
    print(f"{torch.get_num_threads()} thread(s), {args.repeats} repeats, median; tokens per second counted up to and including EOS")
    for name in chosen:
        model.decoding = decodings[name]
        warm = sets[0]
        for way in WAYS:  # the first calls of generate pay one-off costs
            decode_set(model, warm, batches(model, warm, 8, way), way)
        whole = {s.name: logits(model, s, len(s.ids), "ours")[0] for s in sets}  # (a) with each set in one batch
        rows = []
        for size in sizes:
            r = measure(model, sets, size, args.repeats, whole)
            same = " / ".join("yes" if r["same"][w] == r["examples"] else f"no ({r['examples'] - r['same'][w]} differ)" for w in ("plain", "trimmed", "bucketed"))
            rows.append(
                [
                    size,
                    f"{r['per_s']['ours']:.0f}",
                    f"{r['per_s']['plain']:.0f}",
                    f"{r['ours/plain']:.2f}",
                    f"{r['per_s']['trimmed']:.0f}",
                    f"{r['per_s']['bucketed']:.0f}",
                    f"{r['ours/trimmed']:.2f} / {r['ours/bucketed']:.2f}",
                    f"{r['pad ours']:.0%} / {r['pad trimmed']:.0%} / {r['pad bucketed']:.0%}",
                    f"{r['idle ours']:.0%} / {r['idle bucketed']:.0%}",
                    same,
                    f"{r['difference']:.1e}",
                    f"{r['batch difference']:.1e}",
                    f"{r['margin']:.1e}",
                ]
            )
            print(f"decoding {name}: batch {size} measured", file=sys.stderr, flush=True)
        label = ", ".join(f"{k} {v}" for k, v in decodings[name].items()) or "plain greedy"
        print(f"\ndecoding: {name} ({label}); {r['tokens']} generated tokens per pass\n")
        headers = [
            "batch",
            "(a) ours tok/s",
            "(b) plain tok/s",
            "time (a) / (b)",
            "(a') trimmed tok/s",
            "(c) bucketed tok/s",
            "speed-up (a') / (c) over (a)",
            "prompt padding (a) / (a') / (c)",
            "steps on stopped rows (a) / (c)",
            "texts = (a): (b) / (a') / (c)",
            "max |Δ logit| (a) vs (c)",
            "max |Δ logit| (a) vs (a) one batch per set",
            "min greedy margin",
        ]
        print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        print()


if __name__ == "__main__":
    main()
