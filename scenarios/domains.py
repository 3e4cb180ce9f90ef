"""A stream over several data sets, one task each (MTIL and X-TAIL), built from `DataSetTask`s.

Every data set adds its classes to the stream: global class ids run through the tasks in task
order, and within a task in the data set's own label order. Each class keeps the prompt templates
of its data set (`Stream.class_templates`).

Class names must be unique across the stream (docs/streams.md), but data sets share names
("pizza" is a Caltech101 and a Food-101 class). The reference code never renames a class: it
concatenates each data set's prompts, and two such classes stay apart only when their data sets'
templates differ. The rule here keeps those prompts and makes the names unique:
- a name found in one data set only is kept as it is;
- a name found in several gets its data set's title in brackets, "pizza (Food)", in
  `class_names`, while its prompts stay the reference's ones, the template filled with the plain
  name (stored as fixed prompts in `class_templates`);
- with `distinct_prompts` (X-TAIL, where all classes compete), classes whose reference prompts are
  identical across data sets ("a photo of a pagoda." in Caltech101 and SUN397) use the bracketed
  name in their prompts too, so no two classes of the union share a text feature.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .image_folder import Samples


@dataclass(frozen=True)
class DataSetTask:
    """One real data set as one task of the stream: its classes, prompts and splits."""

    key: str  # data set key, e.g. "caltech101"
    title: str  # task name, e.g. "Caltech101"
    labels: tuple[int, ...]  # the data set's local labels, in class order
    names: tuple[str, ...]  # reference class names, one per label
    templates: tuple[str, ...]
    train: Samples
    test: Samples
    record: dict[str, Any] = field(default_factory=dict)  # split files, sizes: goes into the metadata


def _fixed(prompt: str) -> str:
    """A prompt stored as a template that `str.format` returns unchanged."""
    return prompt.replace("{", "{{").replace("}", "}}")


def disambiguate(domains: Sequence[DataSetTask], distinct_prompts: bool) -> tuple[list[str], dict[int, list[str]]]:
    """Unique class names and per-class templates for the classes of `domains`, in stream order."""
    entries = [(d, name) for d in domains for name in d.names]
    counts = Counter(name for _, name in entries)
    prompts = [tuple(t.format(name) for t in d.templates) for d, name in entries]
    clashing: set[int] = set()
    if distinct_prompts:
        owners: dict[str, set[int]] = defaultdict(set)
        for cid, texts in enumerate(prompts):
            for text in texts:
                owners[text].add(cid)
        clashing = {cid for ids in owners.values() if len(ids) > 1 for cid in ids}
    names: list[str] = []
    templates: dict[int, list[str]] = {}
    for cid, (domain, name) in enumerate(entries):
        if counts[name] == 1 and cid not in clashing:
            names.append(name)
            templates[cid] = list(domain.templates)
            continue
        names.append(f"{name} ({domain.title})")
        templates[cid] = list(domain.templates) if cid in clashing else [_fixed(p) for p in prompts[cid]]
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:  # a name repeated inside one data set: its table is wrong
        raise ValueError(f"class names repeated within a data set: {repeated[:5]}")
    return names, templates


def data_set_stream(
    name: str,
    version: str,
    protocol: str,
    domains: Sequence[DataSetTask],
    params: dict[str, Any],
    image_size: int,
    distinct_prompts: bool,
    metadata: dict[str, Any],
    reference: Callable[[], Any] | None = None,
):
    """A `Stream` with one task per data set (train and test splits as given); `reference` loads
    its reference data (see `reference_data`)."""
    from cl_bench import DEFAULT_TEMPLATES, StreamTask, assemble_stream

    class_names, class_templates = disambiguate(domains, distinct_prompts)
    tasks = []
    offset = 0
    for domain in domains:
        to_global = {label: offset + i for i, label in enumerate(domain.labels)}
        tasks.append(StreamTask(domain.title, list(to_global.values()), domain.train.dataset(image_size, to_global), domain.test.dataset(image_size, to_global)))
        offset += len(domain.labels)
    record = {
        "version": version,
        "image_size": image_size,
        "task_order": [d.title for d in domains],
        "templates": {d.title: list(d.templates) for d in domains},
        "class_order": {d.title: list(d.labels) for d in domains},  # local labels, in stream order
        "data_sets": {d.title: d.record for d in domains},
        "augmentation": "none (resize shorter side + centre crop, deterministic)",
        **metadata,
    }
    return assemble_stream(
        name,
        version,
        protocol,
        tasks,
        class_names=class_names,
        templates=DEFAULT_TEMPLATES,
        class_templates=class_templates,
        preload=False,
        metadata=record,
        params=params,
        reference=reference,
    )
