"""Scorers of generated answers, as TRACE's code scores them, each returning a score in [0, 100]
for a list of predictions. Two codes score TRACE, and the `trace` stream's protocol settings
(docs/language-models.md, "TRACE protocol settings") choose between them: MoRAM's TRACE code
(TRACE/metrics.py, TRACE/evaluations/, TRACE/inference/infer_multi_command.py; the `moram`
setting) and the original TRACE code (BeyonderXX/TRACE metrics.py and evaluations/; `trace`).

MoRAM's:
- `accuracy`: `caculate_accuracy`: the stripped prediction, cut to the reference's length,
  equals the reference.
- `choice`: C-STANCE's and FOMC's: the answer letter first (`postprocess_predictions`: the first
  A, B or C standing alone, either case; else the first character that is one of them, upper-cased;
  else the text unchanged), then `accuracy`.
- `first-char`: ScienceQA's (`eval_ScienceQA.resolve`): the first character of the stripped
  prediction against the reference's.
- `qwen-math`: NumGLUE's: the Qwen2.5-Math parser (`\\boxed{}` first, else the last number; the
  reference, or it x100 or /100, within a relative 1e-4; see `cl_bench.blocks.math_answers`).
- `rouge-l`: ROUGE-L F of the `rouge` package (1.0.1, what TRACE imports; its summary-level
  ROUGE-L counts distinct words, case-sensitive, punctuation attached), newline appended to the
  prediction. MeetingBank.
- `fuzzy`: fuzzywuzzy's `fuzz.ratio` with python-Levenshtein installed (the Indel ratio, computed
  here by rapidfuzz, whose `Indel.normalized_similarity` python-Levenshtein >= 0.20 calls), rounded
  as fuzzywuzzy rounds (`int(round(x))`: half to even), after Py150's literal post-processing
  (<NUM_LIT> -> 0, ...).
- `sari`: SARI (Xu et al. 2016) as the Hugging Face `sari` metric that TRACE loads computes it
  (lower-cased, sacrebleu's 13a tokenisation, one reference, keep and add F1, deletion
  precision, n = 1..4); implemented here since that metric downloads its script at run time.
  The original TRACE code scores 20Minuten the same way.

The original TRACE code's:
- `exact`: its `caculate_accuracy`: the prediction as generated equals the reference (no strip,
  no cut). C-STANCE, FOMC, NumGLUE.
- `first-char-raw`: ScienceQA's `resolve` there: the first character of the prediction as
  generated (not stripped), then `exact`.
- `rouge-l-trace`: its `caculate_rouge`: the same package's ROUGE-L F with the reference passed
  as the hypothesis and no newline appended (summary-level ROUGE-L is not symmetric).
- `fuzzy-difflib`: fuzzywuzzy's `fuzz.ratio` without python-Levenshtein (TRACE's requirements
  list fuzzywuzzy alone): difflib's `SequenceMatcher(None, prediction, reference).ratio()`,
  rounded as fuzzywuzzy rounds. Its values differ from the Indel ratio's: "bab" against "acb"
  is 33 here and 67 by `fuzzy`.

Ours: `number`, the last number written in the prediction (thousands separators allowed) equals
the reference's last number within a relative 1e-4 (an absolute 1e-9 near zero); neither
TRACE code uses it.

An empty prediction or reference scores 0 but counts in the mean, as in TRACE. Every scorer is a
mean of per-example scores in [0, 1] (none is corpus-level): `get_scorer(name, per_example=True)`
gives them, and a cell is `100 * total / count` with `total` their left-to-right sum
(`cl_bench.cells.mean_score`), which a result file's per-example outcomes recompute bit for bit.
Pure Python; the packages load when a scorer is first used. A building block of the public API
(`cl_bench.get_scorer`): language-model backbones score with it, text streams name its scorers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from cl_bench.cells import mean_score
from cl_bench.errors import unknown_name

Scorer = Callable[[Sequence[str], Sequence[str], Sequence[str] | None], float]
ExampleScorer = Callable[[Sequence[str], Sequence[str], Sequence[str] | None], list[float]]


def accuracy_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    hits = []
    for prediction, reference in zip(predictions, references):
        cut = prediction.strip()[: min(len(reference), len(prediction.strip()))]
        hits.append(float(bool(cut) and bool(reference) and cut == reference))
    return hits


def first_char_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    def first(text: str) -> str:
        text = text.strip()
        return text[0] if text else "N/A"  # TRACE's resolve() marks an empty answer N/A

    return accuracy_each([first(p) for p in predictions], [first(r) for r in references])


CHOICE_LETTERS = ("A", "B", "C")  # C-STANCE's and FOMC's answer letters (MoRAM: CHOICE_TASK_LABELS)
STANDALONE_LETTER = re.compile(r"\b([ABC])\b", re.IGNORECASE)


def choice_letter(text: str) -> str:
    """The answer letter of a prediction, as MoRAM's `postprocess_predictions` finds it: the first
    A, B or C standing alone (word boundaries, either case), else the first character that
    upper-cases to one of them, else the stripped text unchanged (which then cannot match)."""
    text = text.strip()
    found = STANDALONE_LETTER.search(text)
    if found:
        return found.group(1).upper()
    return next((char.upper() for char in text if char.upper() in CHOICE_LETTERS), text)


def choice_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    return accuracy_each([choice_letter(p) for p in predictions], references)


def exact_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    """The original TRACE code's accuracy: the prediction as generated equals the reference."""
    return [float(bool(p) and bool(r) and p == r) for p, r in zip(predictions, references)]


def first_char_raw_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    """The original TRACE code's ScienceQA: first characters as generated (not stripped), exact match."""
    return exact_each([p[:1] for p in predictions], [r[:1] for r in references])


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_number(text: str) -> float | None:
    """The last number written in `text` (thousands separators allowed), or None."""
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def number_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    """Ours: the last number of the prediction equals the reference's (relative 1e-4, absolute
    1e-9). Not MoRAM's NumGLUE scorer (`qwen-math`) nor the original TRACE code's (`exact`)."""
    hits = []
    for prediction, reference in zip(predictions, references):
        got, want = last_number(prediction), last_number(reference)
        hits.append(float(got is not None and want is not None and math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-9)))
    return hits


def qwen_math_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    from .math_answers import is_correct

    return [float(is_correct(p, r)) for p, r in zip(predictions, references)]


def _without_recursion_limit(score: Callable[[], float], words: int) -> float:
    """`score()` with room for the `rouge` package's recursion (its LCS walk-back recurses once per
    word of both texts): a 1,000-word sentence would otherwise end in a RecursionError. It runs in
    a thread with a large stack, so a deep recursion cannot overflow the C stack."""
    import sys
    import threading

    needed = 2 * words + 1000
    if needed <= sys.getrecursionlimit():
        return score()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = score()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    previous_limit, previous_stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(needed)
    threading.stack_size(min(1 << 30, max(64 << 20, needed * 2048)))
    try:
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(previous_stack)
        sys.setrecursionlimit(previous_limit)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _rouge(predictions: Sequence[str], references: Sequence[str], *, reference_first: bool, newline: bool) -> list[float]:
    from rouge import Rouge

    rouge = Rouge(metrics=["rouge-l"])
    scores = []
    for prediction, reference in zip(predictions, references):
        scores.append(0.0)  # replaced by the score below; stays 0 where TRACE counts the example as 0
        if not prediction.strip() or not reference.strip():
            continue  # the package refuses empty text; TRACE skips it (and counts it as 0)
        if newline and "\n" not in prediction:
            prediction += "\n"
        hypothesis, target = (reference, prediction) if reference_first else (prediction, reference)
        try:
            def score(hypothesis: str = hypothesis, target: str = target) -> float:
                return rouge.get_scores(hypothesis, target, avg=True)["rouge-l"]["f"]

            scores[-1] = _without_recursion_limit(score, len(hypothesis.split()) + len(target.split()))
        except ValueError:  # text of separators only: no words to match
            continue
    return scores


def rouge_l_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    """MoRAM's: the prediction as the hypothesis, a newline appended to it if it has none."""
    return _rouge(predictions, references, reference_first=False, newline=True)


def rouge_l_trace_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    """The original TRACE code's: `score_rouge(target, prediction)`, no newline."""
    return _rouge(predictions, references, reference_first=True, newline=False)


LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def py150_literals(code: str) -> str:
    """Py150's placeholders back to code (TRACE, eval_Py150.postprocess)."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    return LITERAL.sub(lambda m: m.group(2), code)


def _fuzz_ratio(similarity: Callable[[str, str], float], predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    scores = []
    for prediction, reference in zip(predictions, references):
        prediction, reference = py150_literals(prediction), py150_literals(reference)
        if not (prediction and reference):
            scores.append(0.0)  # TRACE counts an empty one as 0
            continue
        # fuzzywuzzy's ratio: 100 for equal strings, else utils.intr(100 * ratio) = int(round(x)),
        # Python's round: half to even (62.5 -> 62)
        scores.append((100 if prediction == reference else int(round(100 * similarity(prediction, reference)))) / 100.0)
    return scores


def fuzzy_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    """fuzzywuzzy's `fuzz.ratio` as it is with python-Levenshtein: the Indel ratio (rapidfuzz)."""
    from rapidfuzz.distance import Indel

    return _fuzz_ratio(Indel.normalized_similarity, predictions, references)


def fuzzy_difflib_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    """fuzzywuzzy's `fuzz.ratio` as it is without python-Levenshtein: difflib's ratio."""
    from difflib import SequenceMatcher

    return _fuzz_ratio(lambda a, b: SequenceMatcher(None, a, b).ratio(), predictions, references)


# ------------------------------------------------------------------------------------ SARI


def _ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _sari_ngram(source: list[str], candidate: list[str], references: list[list[str]]) -> tuple[float, float, float]:
    """Keep F1, deletion precision and addition F1 of one n-gram order (Xu et al. 2016)."""
    refs = len(references)
    reference_counts = Counter(g for r in references for g in r)
    source_counts = Counter({g: c * refs for g, c in Counter(source).items()})
    candidate_counts = Counter({g: c * refs for g, c in Counter(candidate).items()})

    kept = source_counts & candidate_counts
    kept_good = kept & reference_counts
    kept_all = source_counts & reference_counts
    keep_precision = sum(kept_good[g] / kept[g] for g in kept) / len(kept) if kept else 1.0
    keep_recall = sum(kept_good.values()) / sum(kept_all.values()) if kept_all else 1.0
    keep = 2 * keep_precision * keep_recall / (keep_precision + keep_recall) if keep_precision + keep_recall > 0 else 0.0

    deleted = source_counts - candidate_counts
    deleted_good = deleted - reference_counts
    delete_precision = sum(deleted_good[g] / deleted[g] for g in deleted) / len(deleted) if deleted else 1.0

    added = set(candidate_counts) - set(source_counts)
    added_good = added & set(reference_counts)
    added_all = set(reference_counts) - set(source_counts)
    add_precision = len(added_good) / len(added) if added else 1.0
    add_recall = len(added_good) / len(added_all) if added_all else 1.0
    add = 2 * add_precision * add_recall / (add_precision + add_recall) if add_precision + add_recall > 0 else 0.0
    return keep, delete_precision, add


def sari_sentence(source: str, candidate: str, references: Sequence[str]) -> float:
    """SARI of one sentence in [0, 1]: the mean of keep, delete and add, each averaged over n = 1..4."""
    split = [text.split(" ") for text in (source, candidate, *references)]
    parts = [_sari_ngram(_ngrams(split[0], n), _ngrams(split[1], n), [_ngrams(r, n) for r in split[2:]]) for n in range(1, 5)]
    return sum(sum(p[i] for p in parts) / 4 for i in range(3)) / 3


def _normalise(text: str) -> str:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text.lower())


def sari_each(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> list[float]:
    if sources is None or len(sources) != len(predictions):
        raise ValueError("sari needs the source of every prediction")
    return [sari_sentence(_normalise(s), _normalise(p), [_normalise(r)]) for s, p, r in zip(sources, predictions, references)]


def _cell(each: ExampleScorer) -> Scorer:
    """The cell scorer of a per-example scorer: `mean_score` of its scores."""

    def score(predictions: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None) -> float:
        return mean_score(each(predictions, references, sources))

    score.__name__ = score.__qualname__ = each.__name__.removesuffix("_each")
    score.__doc__ = f"100 x the mean of `{each.__name__}`'s per-example scores."
    return score


EXAMPLE_SCORERS: dict[str, ExampleScorer] = {
    "accuracy": accuracy_each,
    "choice": choice_each,
    "first-char": first_char_each,
    "qwen-math": qwen_math_each,
    "rouge-l": rouge_l_each,
    "fuzzy": fuzzy_each,
    "sari": sari_each,
    "exact": exact_each,
    "first-char-raw": first_char_raw_each,
    "rouge-l-trace": rouge_l_trace_each,
    "fuzzy-difflib": fuzzy_difflib_each,
    "number": number_each,
}
SCORERS: dict[str, Scorer] = {name: _cell(each) for name, each in EXAMPLE_SCORERS.items()}
accuracy, choice, first_char, qwen_math, rouge_l, fuzzy, sari, exact, first_char_raw, rouge_l_trace, fuzzy_difflib, number = (SCORERS[name] for name in EXAMPLE_SCORERS)
NEEDS_SOURCES = frozenset({"sari"})


def get_scorer(name: str, per_example: bool = False) -> Any:
    """The scorer called `name`: a cell's score in [0, 100], or with `per_example=True` each
    example's score in [0, 1] (the cell is `mean_score` of them). An unknown name is a one-line
    error with the nearest names."""
    if name not in SCORERS:
        raise unknown_name("scorer", name, list(SCORERS))
    return EXAMPLE_SCORERS[name] if per_example else SCORERS[name]
