"""A stream: an Avalanche benchmark plus what Avalanche does not hold (class names, prompts,
protocol, task order, control sets), and the label space each protocol scores.

Scenario plugins build a `Stream` with `assemble_stream` from one `StreamTask` per task (image
classification) or with `assemble_text_stream` from one `TextTask` per task (instruction tuning of
a language model); the core reads it and never knows a data set by name. The benchmark has the
streams "train" and "test" (one experience per task; targets are global class ids, or for text the
answer-token labels and the test examples' indices) and optionally "control" (one experience per
control set: data never trained on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cl_bench.contracts.protocols import PROTOCOLS
from cl_bench.errors import UserError

DEFAULT_TEMPLATES = ("a photo of a {}.",)


class LabelledTensors(Dataset):
    """Images and integer targets held in memory (the `targets` attribute is what Avalanche reads)."""

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets.long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.targets[index]


def classification_dataset(images: Tensor, targets: Tensor):
    """An Avalanche classification dataset over in-memory tensors."""
    from avalanche.benchmarks.utils import as_classification_dataset

    return as_classification_dataset(LabelledTensors(images, targets))


def build_benchmark(train: Sequence[Any], test: Sequence[Any], control: Sequence[Any] = ()):
    """An Avalanche benchmark with streams train/test (one experience per task) and control."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    streams = {"train": list(train), "test": list(test)}
    if control:
        streams["control"] = list(control)
    return benchmark_from_datasets(**streams)


@dataclass(frozen=True)
class ReferenceData:
    """Data a method may learn from besides the tasks' own: what ZSCL distils on (CLIP's
    pre-training distribution, in the paper ImageNet images and Conceptual Captions texts).

    `dataset` yields (input, label) pairs whose label indexes `texts` (the sentences a text tower
    encodes for them), or is -1 where images and texts are not paired (ZSCL's ImageNet images
    with Conceptual Captions texts); `source` says where it comes from. A stream never supplies
    its test or control data as reference data.
    """

    name: str
    dataset: Any
    texts: Sequence[str]
    source: str = ""

    def batches(self, batch_size: int = 256, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """(inputs, labels) batches, in order or shuffled by a generator seeded with `seed`."""
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        for batch in DataLoader(self.dataset, batch_size=batch_size, shuffle=shuffle, generator=generator):
            yield batch[0], batch[1]


@dataclass
class Experience:
    """What a method sees of one task: its index, name, classes and training data."""

    index: int
    name: str
    classes: list[int]
    dataset: Any  # the Avalanche training dataset of the task
    stream: Stream

    @property
    def seen_classes(self) -> list[int]:
        """The classes of this task and every earlier one, sorted: the label space a class-IL
        learner has seen by the end of this task (what LwF and iCaRL distil and classify over)."""
        return self.stream.seen_classes(self.index)

    def batches(self, batch_size: int = 256, limit: int | None = None, shuffle: bool = False, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, targets) batches of the training data, for methods' own passes over it."""
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
        for count, batch in enumerate(loader):
            if limit is not None and count >= limit:
                return
            yield batch[0], batch[1]


@dataclass(frozen=True)
class Generation:
    """How one text test set (a task's or a control set's) is scored: the model generates up to
    `max_new_tokens` for each prompt and `scorer` (a name the backbone resolves) compares the
    outputs with `references`; `sources` are the inputs, for scorers that need them (SARI)."""

    scorer: str
    max_new_tokens: int
    references: Sequence[str]
    sources: Sequence[str]


@dataclass
class Stream:
    name: str
    version: str
    protocol: str
    benchmark: Any
    class_names: Sequence[str]  # index = global class id
    task_names: Sequence[str]
    task_classes: Sequence[Sequence[int]]  # classes of each task, in the stream's class order
    templates: Sequence[str] = DEFAULT_TEMPLATES
    class_templates: Mapping[int, Sequence[str]] = field(default_factory=dict)  # per-class overrides
    control_names: Sequence[str] = ()
    control_classes: Sequence[Sequence[int]] = ()
    preload: bool = False  # small in-memory data without random transforms: the strategy caches batches
    metadata: dict[str, Any] = field(default_factory=dict)  # sources, sizes, sha256 of splits
    params: dict[str, Any] = field(default_factory=dict)
    generation: Sequence[Generation] = ()  # text streams: one per task
    control_generation: Sequence[Generation] = ()  # text streams: one per control set
    decoding: Mapping[str, Any] = field(default_factory=dict)  # text streams: the generate() settings (greedy unless do_sample)
    reference_loader: Callable[[], ReferenceData] | None = None  # reference data, loaded on first use

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"stream {self.name}: unknown protocol {self.protocol!r}")
        if len(self.task_names) != len(self.task_classes):
            raise ValueError(f"stream {self.name}: {len(self.task_names)} task names for {len(self.task_classes)} tasks")
        if len(set(self.class_names)) != len(self.class_names):
            repeated = sorted({n for n in self.class_names if list(self.class_names).count(n) > 1})
            raise ValueError(f"stream {self.name}: class names must be unique, repeated: {repeated}")
        if len(self.control_names) != len(self.control_classes):
            raise ValueError(f"stream {self.name}: {len(self.control_names)} control names for {len(self.control_classes)} sets")
        streams = self.benchmark.streams
        for stream_name, count in (("train", self.num_tasks), ("test", self.num_tasks), ("control", len(self.control_names))):
            have = len(streams[stream_name]) if stream_name in streams else 0
            if have != count:
                raise ValueError(f"stream {self.name}: benchmark stream '{stream_name}' has {have} experiences, expected {count}")
        if self.protocol == "domain-il" and len({tuple(sorted(c)) for c in self.task_classes}) > 1:
            raise ValueError(f"stream {self.name}: domain-il tasks must share one label space")
        if (self.protocol == "instruct") != bool(self.generation):
            raise ValueError(f"stream {self.name}: the instruct protocol is the one for text tasks (assemble_text_stream)")
        if self.generation and (len(self.generation) != self.num_tasks or len(self.control_generation) != len(self.control_names)):
            raise ValueError(f"stream {self.name}: a text stream needs one Generation per task and per control set")

    @property
    def kind(self) -> str:
        """"generation" for text streams (scored on generated answers), else "classification"."""
        return "generation" if self.generation else "classification"

    @property
    def num_tasks(self) -> int:
        return len(self.task_classes)

    def prompts(self) -> list[list[str]]:
        """The prompts of every class (index = global class id)."""
        return [[t.format(name) for t in self.class_templates.get(cid, self.templates)] for cid, name in enumerate(self.class_names)]

    def label_space(self, row: int, task: int) -> list[int]:
        """Classes scored for A[row, task + 1] (docs/metrics.md): row 0 is before training."""
        if self.protocol == "class-il":
            seen = max(row, task + 1)
            return sorted({c for classes in self.task_classes[:seen] for c in classes})
        if self.protocol == "mtil":
            return sorted(self.task_classes[task])
        if self.protocol == "instruct":  # answers are generated text: no classes
            return []
        return sorted({c for classes in self.task_classes for c in classes})  # domain-il, x-tail

    def seen_classes(self, task: int) -> list[int]:
        """The classes of tasks 0..`task`, sorted."""
        return sorted({c for classes in self.task_classes[: task + 1] for c in classes})

    def reference(self) -> ReferenceData:
        """The stream's reference data (loaded once); a `UserError` when it supplies none."""
        if self.reference_loader is None:
            raise UserError(f"stream {self.name} supplies no reference data; choose a stream that does (docs/plugins.md, Reference data)")
        cached = self.__dict__.get("_reference")
        if cached is None:
            cached = self.__dict__["_reference"] = self.reference_loader()
        return cached

    @property
    def all_classes(self) -> list[int]:
        """Every class of every task (not the control sets'), sorted."""
        return self.seen_classes(self.num_tasks - 1)

    def experience(self, task: int) -> Experience:
        dataset = self.benchmark.streams["train"][task].dataset
        return Experience(task, self.task_names[task], list(self.task_classes[task]), dataset, self)

    def test_sizes(self) -> list[int]:
        """The number of test examples of each task (the class-IL metrics pool by it)."""
        return [len(experience.dataset) for experience in self.benchmark.streams["test"]]

    def describe(self) -> dict[str, Any]:
        """The stream's part of the result file."""
        described = {
            "name": self.name,
            "version": self.version,
            "protocol": self.protocol,
            "params": self.params,
            "task_order": list(self.task_names),
            "class_order": [list(c) for c in self.task_classes],
            "class_names": list(self.class_names),
            "templates": list(self.templates),
            "class_templates": {str(k): list(v) for k, v in self.class_templates.items()},
            "control_sets": [{"name": n, "classes": list(c)} for n, c in zip(self.control_names, self.control_classes)],
            "test_sizes": self.test_sizes(),
            "data": self.metadata,
        }
        if self.generation:
            described["scorers"] = [g.scorer for g in self.generation]
            described["control_scorers"] = [g.scorer for g in self.control_generation]
            described["max_new_tokens"] = [g.max_new_tokens for g in self.generation]
            described["decoding"] = dict(self.decoding)
        return described


@dataclass(frozen=True)
class StreamTask:
    """One task of a stream, or one control set (test data only: a control set is never trained on).

    `classes` are the global class ids it holds, in the stream's class order; `train` and `test`
    are Avalanche classification datasets whose targets are global class ids.
    """

    name: str
    classes: Sequence[int]
    train: Any = None
    test: Any = None


def assemble_stream(
    name: str,
    version: str,
    protocol: str,
    tasks: Sequence[StreamTask],
    *,
    class_names: Sequence[str],
    controls: Sequence[StreamTask] = (),
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    class_templates: Mapping[int, Sequence[str]] | None = None,
    preload: bool = False,
    metadata: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    reference: Callable[[], ReferenceData] | None = None,
) -> Stream:
    """The `Stream` over `tasks` (in task order) and `controls`, with its Avalanche benchmark.

    `reference` loads the stream's reference data (`ReferenceData`) when a method first asks.

    Refuses (ValueError) a record without its data, class ids outside `class_names` or repeated
    in a record, a class name no record holds, control classes that a task trains on, and a
    dataset whose targets are not among its record's classes.
    """
    class_templates = dict(class_templates or {})
    _check_records(name, tasks, controls, class_names, class_templates)
    benchmark = build_benchmark([t.train for t in tasks], [t.test for t in tasks], [c.test for c in controls])
    return Stream(
        name=name,
        version=version,
        protocol=protocol,
        benchmark=benchmark,
        class_names=list(class_names),
        task_names=[t.name for t in tasks],
        task_classes=[list(t.classes) for t in tasks],
        templates=tuple(templates),
        class_templates=class_templates,
        control_names=[c.name for c in controls],
        control_classes=[list(c.classes) for c in controls],
        preload=preload,
        metadata=dict(metadata or {}),
        params=dict(params or {}),
        reference_loader=reference,
    )


def _check_records(name: str, tasks: Sequence[StreamTask], controls: Sequence[StreamTask], class_names: Sequence[str], class_templates: Mapping[int, Any]) -> None:
    if not tasks:
        raise ValueError(f"stream {name}: no tasks")
    known = range(len(class_names))
    held: set[int] = set()
    for kind, records in (("task", tasks), ("control set", controls)):
        for record in records:
            where = f"stream {name}: {kind} {record.name!r}"
            if record.test is None or (record.train is None) != (kind == "control set"):
                need = "test data and no training data" if kind == "control set" else "training and test data"
                raise ValueError(f"{where} needs {need}")
            classes = list(record.classes)
            if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, int) and c in known for c in classes):
                raise ValueError(f"{where}: classes must be distinct ids 0..{len(class_names) - 1}, got {classes}")
            for part in (record.train, record.test):
                stray = {int(t) for t in part.targets.uniques} - set(classes) if part is not None else set()
                if stray:
                    raise ValueError(f"{where}: its data has targets {sorted(stray)[:5]} outside its classes")
            held.update(classes)
    trained = {c for t in tasks for c in t.classes}
    shared = sorted(trained & {c for s in controls for c in s.classes})
    if shared:
        raise ValueError(f"stream {name}: control classes {shared[:5]} are trained by a task")
    unheld = sorted(set(known) - held)
    if unheld:
        raise ValueError(f"stream {name}: class ids {unheld[:5]} ({len(unheld)} in all) belong to no task or control set")
    if any(not isinstance(c, int) or c not in known for c in class_templates):
        raise ValueError(f"stream {name}: class_templates keys must be class ids 0..{len(class_names) - 1}")


# ------------------------------------------------------------------------------------ text streams


@dataclass(frozen=True)
class TextTask:
    """One task of a text stream, or one control set (test examples only).

    Examples are mappings with "prompt" and "answer" (strings) and optionally "source" (the input
    a scorer like SARI compares with; the prompt by default). `scorer` names how answers are scored
    (a name the backbone resolves: `cl_bench.get_scorer`'s for the built-in causal LMs);
    `max_new_tokens` caps each generated answer. `max_prompt_tokens` (None: the backbone's) and
    `keep_prompt_start` (keep a long prompt's start rather than its end) say how this task's
    prompts are truncated; when set, they reach the backbone's `encode_examples` as keywords.
    """

    name: str
    scorer: str
    max_new_tokens: int
    train: Sequence[Mapping[str, str]] = ()
    test: Sequence[Mapping[str, str]] = ()
    max_prompt_tokens: int | None = None
    keep_prompt_start: bool = False

    def encoding(self) -> dict[str, Any]:
        """The keywords for `encode_examples`: only those that differ from the defaults."""
        options: dict[str, Any] = {}
        if self.max_prompt_tokens is not None:
            options["max_prompt_tokens"] = self.max_prompt_tokens
        if self.keep_prompt_start:
            options["keep_prompt_start"] = True
        return options


def tensor_dataset(inputs: Tensor, targets: Tensor):
    """An Avalanche dataset over two aligned tensors (token ids and labels, say)."""
    from avalanche.benchmarks.utils import AvalancheDataset
    from torch.utils.data import TensorDataset

    return AvalancheDataset([TensorDataset(inputs, targets)])


# Far above any real prompt (TRACE's longest, MeetingBank's, are tens of thousands of characters);
# a tokenizer handed tens of megabytes aborts the whole process.
MAX_TEXT_CHARS = 1_000_000


def text_problem(text: str) -> str | None:
    """Why `text` cannot be tokenized (None when it can): too long, or not encodable as UTF-8."""
    if len(text) > MAX_TEXT_CHARS:
        return f"is {len(text):,} characters long, over the {MAX_TEXT_CHARS:,} any text stream needs"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a character UTF-8 cannot encode (U+{ord(text[exc.start]):04X} at {exc.start}, a lone surrogate)"
    return None


def assemble_text_stream(
    name: str,
    version: str,
    tasks: Sequence[TextTask],
    *,
    encode_examples,
    controls: Sequence[TextTask] = (),
    decoding: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Stream:
    """The instruct-protocol `Stream` over `tasks` (in task order) and `controls`.

    `encode_examples(examples, split, **options)` is the backbone's (`ScenarioContext.encode_examples`;
    options: a task's `TextTask.encoding()`, none for most tasks): for
    "train" it returns (token ids, labels), for "test" (prompt ids, anything); the test targets
    become the examples' indices, which the backbone's scorer maps back to the references.
    Refuses (ValueError) a task without training or test examples, a control set with training
    examples, an example that is not a {prompt, answer} mapping of strings, and repeated names.
    """
    if encode_examples is None:
        raise ValueError(f"stream {name}: a text stream needs a backbone with a tokenizer (a language model)")
    if not tasks:
        raise ValueError(f"stream {name}: no tasks")
    names = [t.name for t in (*tasks, *controls)]
    if len(set(names)) != len(names):
        raise ValueError(f"stream {name}: task and control names must be unique, got {names}")
    datasets: dict[str, list[Any]] = {"train": [], "test": [], "control": []}
    generation: dict[str, list[Generation]] = {"test": [], "control": []}
    for kind, records in (("task", tasks), ("control set", controls)):
        for record in records:
            where = f"stream {name}: {kind} {record.name!r}"
            if not record.test or (not record.train) != (kind == "control set"):
                raise ValueError(f"{where} needs {'test examples and no training examples' if kind == 'control set' else 'training and test examples'}")
            if not isinstance(record.max_new_tokens, int) or record.max_new_tokens < 1:
                raise ValueError(f"{where}: max_new_tokens must be a positive integer, got {record.max_new_tokens!r}")
            for index, example in enumerate((*record.train, *record.test)):
                if not isinstance(example, Mapping) or not all(isinstance(example.get(k), str) for k in ("prompt", "answer")):
                    raise ValueError(f"{where}: every example must be a mapping with string 'prompt' and 'answer'")
                for key in ("prompt", "answer"):
                    problem = text_problem(example[key])
                    if problem:  # data from files is untrusted: refused here, not by a tokenizer's crash
                        raise UserError(f"{where}, example {index}: its {key} {problem}")
            if record.max_prompt_tokens is not None and (not isinstance(record.max_prompt_tokens, int) or record.max_prompt_tokens < 1):
                raise ValueError(f"{where}: max_prompt_tokens must be a positive integer or None, got {record.max_prompt_tokens!r}")
            options = record.encoding()
            if record.train:
                datasets["train"].append(tensor_dataset(*encode_examples(record.train, "train", **options)))
            prompts, _ = encode_examples(record.test, "test", **options)
            split = "test" if kind == "task" else "control"
            datasets[split].append(tensor_dataset(prompts, torch.arange(len(record.test))))
            references = [e["answer"] for e in record.test]
            sources = [e.get("source", e["prompt"]) for e in record.test]
            generation[split].append(Generation(record.scorer, record.max_new_tokens, references, sources))
    benchmark = build_benchmark(datasets["train"], datasets["test"], datasets["control"])
    return Stream(
        name=name,
        version=version,
        protocol="instruct",
        benchmark=benchmark,
        class_names=[],
        task_names=[t.name for t in tasks],
        task_classes=[[] for _ in tasks],
        templates=(),
        control_names=[c.name for c in controls],
        control_classes=[[] for _ in controls],
        preload=True,  # token ids in memory: the strategy serves them as tensor batches
        metadata=dict(metadata or {}),
        params=dict(params or {}),
        generation=generation["test"],
        control_generation=generation["control"],
        decoding=dict(decoding or {}),
    )
