"""TRACE's eight tasks (folders in TRACE's data layout, kinds of answer, official epochs and sizes)
and the two protocol settings the instruct streams run them under.

Two codes run TRACE, and they score, truncate and decode differently (docs/language-models.md,
"TRACE protocol settings", has the table with the source lines):

- `moram` (the default): MoRAM's TRACE code (Artificer-AI-Lab/MoRAM, TRACE/), the seed paper's:
  C-STANCE and FOMC answers reduced to their letter before scoring, NumGLUE by the Qwen2.5-Math
  parser, MeetingBank prompts keeping their start (up to 4,096 tokens), greedy decoding with a
  repetition penalty of 1.2 and no repeated 3-gram;
- `trace`: the original TRACE code (BeyonderXX/TRACE): exact matches, its ROUGE-L and
  fuzzywuzzy without python-Levenshtein, every prompt keeping its end, sampling at
  temperature 0.1 (top-k 50, Hugging Face's default).

Both train on one tokenisation of prompt + answer truncated to 1,536 tokens from the left (the
backbone's `encode_examples`). A task names the kind of answer it has, and each setting maps a
kind to its scorer, so `embedded-instruct`'s TRACE-shaped tasks follow the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SETTINGS = ("moram", "trace")
DEFAULT_SETTING = "moram"

# The scorer (cl_bench.get_scorer) of each kind of answer, per setting. Sources:
# moram: TRACE/inference/infer_multi_command.py:26-43,216-233,311 (letters), TRACE/metrics.py:52-89,149-167,
#        TRACE/evaluations/eval_ScienceQA.py, eval_NumGLUE_cm.py / eval_NumGLUE_ds.py -> qwen_math_parser.py:449-485;
# trace: metrics.py:53-86,126-144, evaluations/eval_*.py of BeyonderXX/TRACE, requirements.txt (fuzzywuzzy alone).
SCORERS: dict[str, dict[str, str]] = {
    "moram": {"letter": "choice", "summary": "rouge-l", "code": "fuzzy", "explained-letter": "first-char", "number": "qwen-math", "simplification": "sari", "copy": "accuracy"},
    "trace": {"letter": "exact", "summary": "rouge-l-trace", "code": "fuzzy-difflib", "explained-letter": "first-char-raw", "number": "exact", "simplification": "sari", "copy": "accuracy"},
}

# Decoding (the backbone's generate). moram: TRACE/inference/infer_part.py:303-317 (greedy);
# trace: inference/infer_single.py:182-193 with --temperature 0.1 (:102-106); top_k and top_p are
# not passed there, so Hugging Face's defaults (50, 1.0) apply.
DECODING: dict[str, dict[str, Any]] = {
    "moram": {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3},
    "trace": {"do_sample": True, "temperature": 0.1, "top_k": 50, "top_p": 1.0},
}

# MoRAM's MeetingBank prompts (TRACE/utils/data/data_collator.py:29-42,60-137,215-223;
# --meetingbank_max_prompt_len defaults to 4096, training/main.py:116-121): they keep their start,
# up to 4,096 tokens, in training and at inference. The original code treats them as any other.
LONG_PROMPT: dict[str, dict[str, Any]] = {"moram": {"max_prompt_tokens": 4096, "keep_prompt_start": True}, "trace": {}}


def scorer_for(setting: str, answer: str) -> str:
    """The scorer of a kind of answer under a protocol setting."""
    return SCORERS[setting][answer]


@dataclass(frozen=True)
class TraceTask:
    """One TRACE task: its folder in TRACE's data layout, kind of answer, official epochs and sizes.

    `answer` is a key of `SCORERS[setting]`; `long_prompt` marks MeetingBank, whose prompts
    MoRAM's code truncates its own way (`LONG_PROMPT`)."""

    name: str
    folder: str
    answer: str
    epochs: int
    train_size: int
    test_size: int
    max_new_tokens: int = 512  # TRACE's --max_ans_len in runner_moram.sh
    long_prompt: bool = False

    def scorer(self, setting: str = DEFAULT_SETTING) -> str:
        return scorer_for(setting, self.answer)


# The official order and epochs (TRACE/runner_moram.sh, inference/collect_results.py);
# sizes of LLM-CL-Benchmark_500 (500 training and 100 test examples; NumGLUE-cm has 81 test examples).
TRACE_TASKS: tuple[TraceTask, ...] = (
    TraceTask("C-STANCE", "C-STANCE", "letter", 2, 500, 100),
    TraceTask("FOMC", "FOMC", "letter", 1, 500, 100),
    TraceTask("MeetingBank", "MeetingBank", "summary", 3, 500, 100, long_prompt=True),
    TraceTask("Py150", "Py150", "code", 2, 500, 100),
    TraceTask("ScienceQA", "ScienceQA", "explained-letter", 1, 500, 100),
    TraceTask("NumGLUE-cm", "NumGLUE-cm", "number", 2, 500, 81),
    TraceTask("NumGLUE-ds", "NumGLUE-ds", "number", 2, 500, 100),
    TraceTask("20Minuten", "20Minuten", "simplification", 3, 500, 100),
)
