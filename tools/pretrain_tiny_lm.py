"""Pre-train tiny-lm, the small causal language model that ships in cl_bench.backbones.tiny_lm.

    python tools/pretrain_tiny_lm.py [--out DIR] [--steps N] [--seed S] [--threads 1]

The corpus is generated here from a seeded `random.Random`: general abilities (copying and
reversing word lists, repeating a sentence of a short text, counting, small sums and differences,
word knowledge such as synonyms and good/bad words, templated sentences, key=value recall and
code-like lines), over the vocabulary of `cl_bench.scenarios.instruct_data`, but never in the
stream tasks' own prompt formats. Each corpus document is one row: <s> text </s>.

The script trains a byte-level BPE tokenizer (`tokenizers`) on the corpus, then a `LlamaForCausalLM`
(AdamW, warm-up then cosine, next-token loss on every token), and writes a Hugging Face folder
(config, safetensors, tokenizer, generation config) plus `record.json` (how it was made and the
sha256 of every file it wrote) into `--out` (default: the package folder). The folder is written
to a temporary sibling first and renamed into place; an existing `__init__.py` is kept. With the
same seed, thread count and library versions the files come out byte for byte the same.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARCH: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2
DEFAULTS = {
    "steps": 5000,
    "batch_size": 32,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "warmup": 200,
    "seed": 0,
    "vocab_size": 768,
    "corpus_size": 120000,
    "max_tokens": 96,
    "threads": 1,
}


def package_folder() -> Path:
    return Path(__file__).resolve().parent.parent / "backbones" / "tiny_lm"


# ---- the corpus ---------------------------------------------------------------------------------


def corpus_generators():
    """(name, weight, generate(rng) -> str) for each kind of corpus document."""
    from cl_bench.scenarios import instruct_data as d

    simple_words = sorted(set(d.SYNONYMS.values()))
    words = sorted(set(d.COMMON_WORDS) | set(d.OBJECTS) | set(simple_words) | set(d.CODE_VARS) | set(d.MEETING_ACTIONS))
    good = ("support", "love", "happy", "great", "back", "welcome", "like", "good", "praise", "enjoy")
    bad = ("oppose", "hate", "angry", "bad", "reject", "fear", "dislike", "awful", "blame", "worry")
    neutral = ("read", "talked", "report", "mentioned", "heard", "said", "noted", "saw", "asked", "wrote")
    places = d.MEETING_PLACES + d.STANCE_TARGETS

    def wordlist(rng, lo=3, hi=6, pool=words):
        return [rng.choice(pool) for _ in range(rng.randint(lo, hi))]

    def sentence(rng):
        kind = rng.randrange(7)
        name, name2 = rng.sample(d.NAMES, 2)
        if kind == 0:
            adj = rng.choice(sorted(d.SIMPLE_ADJECTIVES) + sorted(set(d.SIMPLE_ADJECTIVES.values())))
            noun = rng.choice(sorted(d.SIMPLE_NOUNS) + sorted(set(d.SIMPLE_NOUNS.values())))
            verb = rng.choice(sorted(d.SIMPLE_VERBS) + sorted(set(d.SIMPLE_VERBS.values())))
            noun2 = rng.choice(sorted(d.SIMPLE_NOUNS) + sorted(set(d.SIMPLE_NOUNS.values())))
            return f"the {adj} {noun} {verb} the {noun2}."
        if kind == 1:
            return f"{rng.choice(d.MEETING_BODIES)} {rng.choice(d.MEETING_VERBS)} {rng.choice(d.MEETING_ACTIONS)} {rng.choice(places)}."
        if kind == 2:
            return f"{name} has {rng.randint(0, 20)} {rng.choice(d.OBJECTS)}."
        if kind == 3:
            return f"{name} gave {rng.randint(1, 9)} {rng.choice(d.OBJECTS)} to {name2}."
        if kind == 4:
            return f"{name} {rng.choice(good + bad + neutral)} {rng.choice(places)}."
        if kind == 5:
            return f"{name} {rng.choice(('asked about', 'talked about', 'wrote about'))} {rng.choice(d.MEETING_TOPICS)}."
        return f"the {rng.choice(d.COMMON_WORDS)} is {rng.choice(('red', 'blue', 'green', 'black', 'white', 'big', 'small', 'old'))}."

    def copy(rng):
        w = " ".join(wordlist(rng))
        return f"copy: {w}\n{w}"

    def reverse(rng):
        w = wordlist(rng, 2, 5)
        return f"reverse: {' '.join(w)}\n{' '.join(reversed(w))}"

    def repeat_sentence(rng):
        n = rng.randint(2, 4)
        sentences = [sentence(rng) for _ in range(n)]
        k = rng.randrange(n)
        ordinal = ("first", "second", "third", "fourth")[k]
        return f"repeat the {ordinal} sentence: {' '.join(sentences)}\n{sentences[k][:-1]}"

    def count(rng):
        a = rng.randint(0, 15)
        b = a + rng.randint(2, 6)
        return f"count from {a} to {b}:\n{' '.join(str(i) for i in range(a, b + 1))}"

    def sums(rng):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if rng.random() < 0.5:
            return rng.choice((f"{a} + {b} = {a + b}", f"what is {a} plus {b}?\n{a + b}", f"{a} and {b} more make {a + b}."))
        a, b = max(a, b), min(a, b)
        return rng.choice((f"{a} - {b} = {a - b}", f"what is {a} minus {b}?\n{a - b}", f"{a} take away {b} leaves {a - b}."))

    def story(rng):
        name, thing = rng.choice(d.NAMES), rng.choice(d.OBJECTS)
        a, b = rng.randint(1, 12), rng.randint(1, 9)
        up = rng.random() < 0.5
        if not up:
            a = max(a, b + 1)
        c = a + b if up else a - b
        if rng.random() < 0.5:
            verb = rng.choice(("got", "bought", "found", "was given") if up else ("lost", "sold", "gave away", "broke"))
            return f"{name} had {a} {thing}. then {name} {verb} {b}{' more' if up else ''}. so {name} had {c} {thing} in the end."
        verb = rng.choice(("gets", "buys", "finds") if up else ("loses", "sells", "gives away"))
        return f"{name} has {a} {thing}. {name} {verb} {b}{' more' if up else ''}, so then {name} has {c} {thing}."

    def quiz(rng):
        categories = {"color": ("red", "blue", "green", "black", "white"), "animal": ("cat", "dog", "fox", "bird", "fish"),
                      "good word": good, "bad word": bad, "plain word": neutral, "number": ("one", "two", "three", "four", "five")}
        category = rng.choice(sorted(categories))
        others = [w for c, ws in sorted(categories.items()) if c != category for w in ws]
        options = rng.sample(others, 2)
        k = rng.randrange(3)
        options.insert(k, rng.choice(categories[category]))
        shown = " ".join(f"{'ABC'[i]}) {w}" for i, w in enumerate(options))
        return f"which one is a {category}? {shown}\n{'ABC'[k]}"

    def feeling(rng):
        key = rng.choice("ABC")
        place = rng.choice(places)
        said = rng.choice((f"{rng.choice(d.NAMES)} said", "people said", "the paper said"))
        label = {"A": "good", "B": "bad", "C": "neutral"}[key]
        return f"{said} {rng.choice(d.STANCE_PHRASES[key])} {place}. the feeling about {place} is {label}."

    def knowledge(rng):
        kind = rng.randrange(5)
        if kind == 0:
            hard = rng.choice(sorted(d.SYNONYMS))
            return rng.choice((f"{hard} means {d.SYNONYMS[hard]}.", f"a simple word for {hard} is {d.SYNONYMS[hard]}."))
        if kind == 1:
            return f"{rng.choice(good)} is a good word."
        if kind == 2:
            return f"{rng.choice(bad)} is a bad word."
        if kind == 3:
            return f"{rng.choice(neutral)} is a plain word."
        op = rng.choice(sorted(d.CODE_OPS))
        return rng.choice((f"{op} means {d.CODE_OPS[op]}.", f"in code, {op} is written {d.CODE_OPS[op]}."))

    def text(rng):
        sentences = [sentence(rng) for _ in range(rng.randint(2, 6))]
        if rng.random() < 0.5:  # some text is capitalised, as prose is
            sentences = [s[0].upper() + s[1:] for s in sentences]
        return " ".join(sentences)

    def recall(rng):
        keys = rng.sample(("a", "b", "c", "d", "x", "y", "z", "k", "m", "n"), rng.randint(2, 4))
        values = {k: rng.randint(0, 20) for k in keys}
        key = rng.choice(keys)
        return f"{' '.join(f'{k}={v}' for k, v in values.items())}\n{key}?\n{values[key]}"

    def code(rng):
        a, b, c = rng.sample(d.CODE_VARS, 3)
        sym = rng.choice(sorted(d.CODE_OPS.values()))
        kind = rng.randrange(4)
        if kind == 0:
            return f"{a} = {b} {sym} {c}\nprint({a})"
        if kind == 1:
            return f"for {a} in range({rng.randint(2, 9)}):\n    {b} = {b} {sym} {a}"
        if kind == 2:
            return f"if {a} > {b}:\n    return {a} {sym} {b}"
        return f"{a} = {rng.randint(0, 9)}\n{b} = {a} {sym} {rng.randint(1, 9)}"

    return (
        ("copy", 6, copy),
        ("reverse", 1, reverse),
        ("repeat-sentence", 3, repeat_sentence),
        ("count", 1, count),
        ("sums", 2, sums),
        ("story", 3, story),
        ("quiz", 2, quiz),
        ("feeling", 2, feeling),
        ("knowledge", 2, knowledge),
        ("text", 2, text),
        ("recall", 1, recall),
        ("code", 2, code),
    )


def make_corpus(size: int, seed: int) -> tuple[list[str], dict[str, int]]:
    rng = random.Random(f"tiny-lm corpus/{seed}")
    generators = corpus_generators()
    names = [g[0] for g in generators]
    weights = [g[1] for g in generators]
    made = {name: 0 for name in names}
    docs = []
    for _ in range(size):
        i = rng.choices(range(len(generators)), weights=weights)[0]
        docs.append(generators[i][2](rng))
        made[names[i]] += 1
    return docs, made


# ---- tokenizer, model, training -----------------------------------------------------------------


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(docs, trainer=trainer)
    # Like Llama: encoding a text prepends <s> unless add_special_tokens=False.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token=None, padding_side="left", model_max_length=ARCH["max_position_embeddings"]
    )


def train(args: argparse.Namespace):
    import torch
    from tqdm import tqdm
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    started = time.time()
    torch.set_num_threads(args.threads)
    docs, made = make_corpus(args.corpus_size, args.seed)
    tokenizer = train_tokenizer(docs, args.vocab_size)
    pad, bos, eos = (tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS)
    encoded = tokenizer(docs, add_special_tokens=False)["input_ids"]
    rows = [[bos] + ids[: args.max_tokens - 2] + [eos] for ids in encoded]
    corpus_tokens = sum(len(r) for r in rows)

    torch.manual_seed(args.seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **ARCH)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False, max_new_tokens=32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    generator = torch.Generator().manual_seed(args.seed)
    average = None
    bar = tqdm(range(args.steps), desc="pre-training tiny-lm", file=sys.stderr, mininterval=2.0)
    for step in bar:
        picked = torch.randint(0, len(rows), (args.batch_size,), generator=generator).tolist()
        batch = [rows[i] for i in picked]
        width = max(len(r) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        average = loss.item() if average is None else 0.98 * average + 0.02 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{average:.3f}")
    bar.close()
    model.eval()
    record = {
        "command": "python tools/pretrain_tiny_lm.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python tools/pretrain_tiny_lm.py",
        "seed": args.seed,
        "corpus": {
            "description": (
                "generated by tools/pretrain_tiny_lm.py (seeded random.Random): one document per row, <s> text </s>, "
                "over the word lists of cl_bench.scenarios.instruct_data but never in the stream tasks' prompt formats"
            ),
            "documents": args.corpus_size,
            "tokens": corpus_tokens,
            "documents_by_kind": made,
            "max_tokens_per_document": args.max_tokens,
        },
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab_size": len(tokenizer), "special_tokens": {"pad": pad, "bos": bos, "eos": eos}, "padding_side": "left"},
        "arch": {"class": "LlamaForCausalLM", **ARCH, "vocab_size": len(tokenizer)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "optimizer": "AdamW betas (0.9, 0.98), no decay on norms, grad-norm clip 1.0",
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup": args.warmup,
        "schedule": "linear warm-up then cosine to 0",
        "final_loss": round(float(loss.item()), 4),
        "final_loss_smoothed": round(float(average), 4),
        "threads": torch.get_num_threads(),
    }
    return model, tokenizer, record, started


def write_folder(out: Path, model, tokenizer, record: dict[str, Any], started: float) -> None:
    import tokenizers
    import torch
    import transformers

    from cl_bench.provenance import cpu_name, file_sha256

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # transformers 5 names its class TokenizersBackend; PreTrainedTokenizerFast (its alias) loads in 4.x too.
        config_file = tmp / "tokenizer_config.json"
        config_file.write_text(config_file.read_text(encoding="utf-8").replace('"TokenizersBackend"', '"PreTrainedTokenizerFast"'), encoding="utf-8")
        written = sorted(p.name for p in tmp.iterdir() if p.is_file())
        record["seconds"] = round(time.time() - started, 1)
        record["versions"] = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
        record["machine"] = platform.machine()
        record["cpu"] = cpu_name()  # another CPU kind rounds differently: the weights differ in their bits
        record["sha256"] = {name: file_sha256(tmp / name) for name in written}
        (tmp / "record.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)
        if (out / "__init__.py").is_file():
            shutil.copy2(out / "__init__.py", tmp / "__init__.py")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{int(time.time())}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(package_folder()), help="the model folder to write (default: the package's backbones/tiny_lm)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from transformers.utils import logging

    logging.set_verbosity_error()
    model, tokenizer, record, started = train(args)
    write_folder(Path(args.out), model, tokenizer, record, started)
    print(f"wrote {args.out}: {record['parameters']} parameters, vocabulary {record['tokenizer']['vocab_size']}, final loss {record['final_loss']}, {record['seconds']}s")


if __name__ == "__main__":
    main()
