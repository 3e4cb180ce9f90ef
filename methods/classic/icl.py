"""`icl`: the frozen model prompted with `k` demonstrations of each task (TRACE's FIX row).

Nothing trains. In `setup`, for every task, `k` demonstrations are chosen from the task's
**training** set (a seeded random order; TRACE's rules): a demonstration is accepted only if its
prompt and answer together fit in (`max_prompt_tokens` − the header) / 12 tokens (or
`demo_max_tokens`); on a task named in `balanced_tasks` (TRACE's C-STANCE and FOMC, and
embedded-instruct's `stance`), each answer at most ⌈k / distinct answers⌉ times (TRACE: 2 of
each of A, B, C); on the others every answer differs; tasks named in `skip_tasks` get none (TRACE: MeetingBank). Each test prompt of that task
then generates from

    BOS + header + (demo prompt + demo answer + "\\n\\n") × k + the test prompt

cut from the left to `max_prompt_tokens` (3,584 in TreeLoRA's FIX.sh), the header being TRACE's
"We will give you several examples and you should follow them to accomplish the task.\\n
Examples:\\n". The model's decoding and the tasks' scorers are the stream's. Every row of the
matrix is the same (BWT 0; TRACE's page shows "–"). Control sets get no demonstrations.

Departures from TRACE (BeyonderXX/TRACE `inference/ICL.py:340-365`, MoRAM
`TRACE/inference/infer_part.py:200-231,544-580`):
- TRACE draws the demonstrations from the task's **test** split (a demonstration can be the
  query itself); here from its training split: a test example is never shown.
- TRACE moves the task's instruction header (`TASK_PROMT`) from each demonstration and the query
  to the top, before the header; cl_bench does not know each stream's instruction text, so every
  demonstration and the query keep their own prompt whole. Demonstrations are joined as token ids
  (the training rows' prompt + answer tokens), not re-tokenised from the joined text.
- TRACE keeps drawing until k are accepted or 9,999 draws; here one pass over a shuffled order of
  the training set (the same acceptance rules), so fewer than k only where fewer fit.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cl_bench import Method

HEADER = "We will give you several examples and you should follow them to accomplish the task.\n Examples:\n"  # TRACE's Constrained_PROMPT
SEPARATOR = "\n\n"


class ICL(Method):
    def __init__(self, hparams: dict[str, Any]) -> None:
        self.k = int(hparams["k"])
        if self.k < 0:
            raise ValueError(f"method.k must be >= 0, got {self.k}")
        self.limit = int(hparams["max_prompt_tokens"])
        if self.limit < 1:
            raise ValueError(f"method.max_prompt_tokens must be positive, got {self.limit}")
        self.demo_max_tokens = int(hparams["demo_max_tokens"])
        self.skip = set(hparams["skip_tasks"])
        self.balanced = set(hparams["balanced_tasks"])
        self.chosen: dict[int, list[int]] = {}  # per task, the training rows used (for tests and logs)

    def setup(self, model, stream) -> None:
        if not hasattr(model, "set_prompt_prefixes"):
            raise ValueError("icl prompts a causal language model (set_prompt_prefixes); this backbone has none")
        tokens = lambda text: model.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        header, separator = tokens(HEADER), tokens(SEPARATOR)
        room = self.demo_max_tokens or (self.limit - len(header)) // 12
        prefixes: dict[int, list[int]] = {}
        for task in range(stream.num_tasks):
            experience = stream.experience(task)
            if experience.name in self.skip or self.k == 0:
                continue
            ids, labels = (torch.cat(parts) for parts in zip(*experience.batches(1024)))
            demos, self.chosen[task] = choose(ids, labels, self.k, room, int(torch.randint(0, 2**31 - 1, (1,))), model.bos_id, model.eos, experience.name in self.balanced)
            if demos:
                prefixes[task] = header + [t for demo in demos for t in demo + separator]
        model.set_prompt_prefixes(prefixes, self.limit)


def choose(ids, labels, k: int, room: int, seed: int, bos: int, eos: int, balanced: bool) -> tuple[list[list[int]], list[int]]:
    """Up to `k` demonstrations (prompt + answer token ids, without BOS, EOS and padding) from
    training rows, in a seeded random order, by TRACE's rules (length, balanced or distinct answers)."""
    rows, answers = [], []
    for row, label in zip(ids.tolist(), labels.tolist()):
        tokens = [t for t in row if t != -1]
        answer = tuple(t for t in label if t != -100 and t != eos)
        if tokens and tokens[0] == bos:
            tokens = tokens[1:]
        if tokens and tokens[-1] == eos:
            tokens = tokens[:-1]
        rows.append(tokens)
        answers.append(answer)
    cap = math.ceil(k / len(set(answers))) if balanced else 1
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen: list[int] = []
    used: dict[tuple[int, ...], int] = {}
    for index in order:
        if len(chosen) == k:
            break
        if len(rows[index]) + 1 > room or used.get(answers[index], 0) >= cap:  # + 1: TRACE counts BOS
            continue
        used[answers[index]] = used.get(answers[index], 0) + 1
        chosen.append(index)
    return [rows[i] for i in chosen], chosen
