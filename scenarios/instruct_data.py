"""A small offline instruction-tuning stream shaped like TRACE, made by seeded generators.

TRACE (Wang et al., 2023) trains a language model on eight tasks in sequence. The tasks here are
synthetic stand-ins of the same shape (answer kind and scorer), with short prompts and answers so
that a run on the shipped tiny-lm costs seconds per task:

    stance      C-STANCE-like stance of a short text toward a target, answered with a letter
    meeting     MeetingBank-like summary: the decision sentence of three-sentence notes
    code        Py150-like completion: the `return` line of a two-argument function
    simplify    20Minuten-like simplification: hard words replaced by simple synonyms

Each is scored as the protocol setting scores its TRACE counterpart (`trace_tasks.SCORERS`).

A NumGLUE-like one-step word problem (answered with a number) was tried and dropped: the tiny-lm
reached only 67 % after 400 iterations (the default budget is 150), under the 80 % every task here
must reach. NumGLUE's scorers are still tested on hand-made cases.

`CONTROL` is an ability the tiny-lm learns in pre-training (copying a short word list) that the
stream never trains on: its score before and after the stream measures retention.

`examples(task, seed, count, split)` is deterministic across processes (string-seeded
`random.Random`, never the salted `hash()`), and train and test never share a prompt: every prompt
falls into one split by the sha256 of its text. Pure Python; the word lists are also the
vocabulary that `tools/pretrain_tiny_lm.py` pre-trains on (in its own formats, never these).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

SPLITS = ("train", "test")
# The share of the prompt space that belongs to the test split (by the sha256 of the prompt).
TEST_SHARE = 0.2
# The stream's default sizes.
TRAIN_SIZE = 500
TEST_SIZE = 100
CONTROL_SIZE = 100


@dataclass(frozen=True)
class InstructTask:
    """One instruction task: `generate(rng)` returns one (prompt, answer) pair.

    A prompt ends with a newline and an answer has no leading space: the model reads
    `prompt + answer`. `answer` is the kind of answer (a key of `trace_tasks.SCORERS[setting]`):
    each protocol setting scores it as it scores the TRACE task of that kind; `long_prompt` marks
    the MeetingBank-like task, truncated as MeetingBank is.
    """

    name: str
    answer: str
    max_new_tokens: int
    generate: Callable[[random.Random], tuple[str, str]]
    summary: str
    long_prompt: bool = False


# ---- word lists (shared with the tiny-lm pre-training corpus) ----------------------------------

NAMES = ("anna", "bob", "carl", "dana", "emma", "finn", "gina", "hugo", "ivy", "jack", "kate", "leo", "mia", "nick", "olga", "paul")
OBJECTS = ("apples", "books", "cards", "coins", "eggs", "pens", "cups", "balls", "stamps", "shells")

STANCE_TARGETS = ("the new park", "the tax plan", "the bike lane", "the school rule", "the city budget", "the bus route", "the night market", "the old library")
STANCE_PHRASES = {
    "A": ("i fully support", "we love", "i am happy about", "great news about", "i strongly back", "we welcome"),
    "B": ("i strongly oppose", "we hate", "i am angry about", "bad news about", "i reject", "we fear"),
    "C": ("i read about", "they talked about", "here is a report on", "someone mentioned", "we heard about"),
}

MEETING_BODIES = ("the council", "the board", "the committee", "the team")
MEETING_VERBS = ("voted to", "agreed to", "decided to")
MEETING_ACTIONS = ("fund", "close", "repair", "build", "sell", "open")
MEETING_PLACES = ("the new library", "the old bridge", "the east park", "the main road", "the bus depot", "the city pool")
MEETING_TOPICS = ("parking", "the weather", "lunch", "the budget", "the schedule", "the noise")
MEETING_FILLERS = ("{name} opened the meeting.", "{name} asked about {topic}.", "{name} thanked everyone.", "{name} read the minutes.", "{name} talked about {topic}.")

CODE_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "pow": "**"}
CODE_VARS = ("x", "y", "total", "count", "price", "rate", "size", "width", "height", "step", "value", "left", "right", "base", "limit", "score", "speed", "time", "cost", "items")

# Hard word -> simple synonym, by slot of the sentence template "the ADJ NOUN VERB the NOUN".
SIMPLE_ADJECTIVES = {"enormous": "big", "minuscule": "small", "rapid": "fast", "elderly": "old", "joyful": "happy", "furious": "angry"}
SIMPLE_NOUNS = {"automobile": "car", "residence": "home", "physician": "doctor", "infant": "baby", "canine": "dog", "beverage": "drink"}
SIMPLE_VERBS = {"consumed": "ate", "purchased": "bought", "observed": "saw", "constructed": "built", "located": "found", "assisted": "helped"}
SYNONYMS = {**SIMPLE_ADJECTIVES, **SIMPLE_NOUNS, **SIMPLE_VERBS}

COMMON_WORDS = (
    "red", "blue", "green", "black", "white", "cat", "dog", "fox", "bird", "fish", "sun", "moon", "star", "tree", "rock",
    "road", "door", "book", "cup", "box", "hat", "pen", "key", "ship", "car", "milk", "bread", "rain", "snow", "wind",
    "king", "queen", "house", "river", "hill", "lamp", "bell", "ring", "coat", "shoe",
)


# ---- generators -------------------------------------------------------------------------------


def _stance(rng: random.Random) -> tuple[str, str]:
    label = rng.choice("ABC")
    target = rng.choice(STANCE_TARGETS)
    text = f"{rng.choice(NAMES)} said {rng.choice(STANCE_PHRASES[label])} {target}."
    return f"Text: {text}\nStance toward {target}? A) favor B) against C) none\n", label


def _meeting(rng: random.Random) -> tuple[str, str]:
    key = f"{rng.choice(MEETING_BODIES)} {rng.choice(MEETING_VERBS)} {rng.choice(MEETING_ACTIONS)} {rng.choice(MEETING_PLACES)}"
    fillers = [f.format(name=rng.choice(NAMES), topic=rng.choice(MEETING_TOPICS)) for f in rng.sample(MEETING_FILLERS, 2)]
    sentences = fillers[:]
    sentences.insert(rng.randint(0, 2), key + ".")
    return f"Meeting notes: {' '.join(sentences)}\nSummary:\n", key


def _code(rng: random.Random) -> tuple[str, str]:
    op = rng.choice(sorted(CODE_OPS))
    a, b = rng.sample(CODE_VARS, 2)
    return f"Complete the code:\ndef {op}_{a}_{b}({a}, {b}):\n", f"return {a} {CODE_OPS[op]} {b}"


def _simplify(rng: random.Random) -> tuple[str, str]:
    def word(table: dict[str, str]) -> tuple[str, str]:
        hard = rng.choice(sorted(table))
        return (hard, table[hard]) if rng.random() < 0.7 else (table[hard], table[hard])

    slots = [word(SIMPLE_ADJECTIVES), word(SIMPLE_NOUNS), word(SIMPLE_VERBS), word(SIMPLE_NOUNS)]
    if all(h == s for h, s in slots):  # at least one hard word
        hard = rng.choice(sorted(SIMPLE_VERBS))
        slots[2] = (hard, SIMPLE_VERBS[hard])
    source = "the {} {} {} the {}.".format(*(h for h, _ in slots))
    target = "the {} {} {} the {}.".format(*(s for _, s in slots))
    return f"Simplify: {source}\n", target


def _copy(rng: random.Random) -> tuple[str, str]:
    words = " ".join(rng.choice(COMMON_WORDS) for _ in range(rng.randint(3, 5)))
    return f"copy: {words}\n", words


TASKS: tuple[InstructTask, ...] = (
    InstructTask("stance", "letter", 2, _stance, "stance of a short text toward a target: A favor, B against, C none (C-STANCE-like)"),
    InstructTask("meeting", "summary", 16, _meeting, "the decision sentence of three-sentence meeting notes (MeetingBank-like)", long_prompt=True),
    InstructTask("code", "code", 10, _code, "the return line of a two-argument function named by its operation (Py150-like)"),
    InstructTask("simplify", "simplification", 16, _simplify, "replace hard words with simple synonyms (20Minuten-like)"),
)

CONTROL = InstructTask("copy", "copy", 12, _copy, "copy a list of 3-5 common words (a pre-training ability the stream never trains)")


def task_by_name(name: str) -> InstructTask:
    for task in TASKS + (CONTROL,):
        if task.name == name:
            return task
    from cl_bench import unknown_name

    raise unknown_name("instruction task", name, [t.name for t in TASKS + (CONTROL,)])


def split_of(prompt: str) -> str:
    """The split a prompt belongs to, by the sha256 of its text (the same in every process)."""
    bucket = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "test" if bucket < TEST_SHARE else "train"


def examples(task: InstructTask, seed: int, count: int, split: str) -> list[dict]:
    """`count` distinct examples `{"prompt", "answer"}` of `task` in `split` ("train" or "test").

    Seeded from (task name, seed, split) by a string-seeded `random.Random`, so the same in every
    process; a prompt is only ever in the split that `split_of` gives it, so train and test are disjoint.
    """
    if split not in SPLITS:
        from cl_bench import unknown_name

        raise unknown_name("split", split, SPLITS)
    rng = random.Random(f"cl_bench.instruct/{task.name}/{seed}/{split}")
    seen: set[str] = set()
    out: list[dict] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 200 * (count + 10):
            raise RuntimeError(f"task {task.name!r} cannot make {count} distinct {split} examples")
        prompt, answer = task.generate(rng)
        if prompt in seen or split_of(prompt) != split:
            continue
        seen.add(prompt)
        out.append({"prompt": prompt, "answer": answer})
    return out
