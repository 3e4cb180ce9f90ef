"""TRACE's eight tasks: their folders in TRACE's data layout, scorers, official epochs and sizes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TraceTask:
    """One TRACE task: its folder in TRACE's data layout, scorer, official epochs and sizes."""

    name: str
    folder: str
    scorer: str
    epochs: int
    train_size: int
    test_size: int
    max_new_tokens: int = 512  # TRACE's --max_ans_len in runner_moram.sh


# The official order, scorers and epochs (TRACE/runner_moram.sh, inference/collect_results.py);
# sizes of LLM-CL-Benchmark_500 (500 training and 100 test examples; NumGLUE-cm has 81 test examples).
TRACE_TASKS: tuple[TraceTask, ...] = (
    TraceTask("C-STANCE", "C-STANCE", "accuracy", 2, 500, 100),
    TraceTask("FOMC", "FOMC", "accuracy", 1, 500, 100),
    TraceTask("MeetingBank", "MeetingBank", "rouge-l", 3, 500, 100),
    TraceTask("Py150", "Py150", "fuzzy", 2, 500, 100),
    TraceTask("ScienceQA", "ScienceQA", "first-char", 1, 500, 100),
    TraceTask("NumGLUE-cm", "NumGLUE-cm", "number", 2, 500, 81),
    TraceTask("NumGLUE-ds", "NumGLUE-ds", "number", 2, 500, 100),
    TraceTask("20Minuten", "20Minuten", "sari", 3, 500, 100),
)
