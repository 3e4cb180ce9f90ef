"""Instruction-tuning streams for language models (the instruct protocol, TRACE-style).

- `embedded-instruct`: TRACE-shaped tasks made by seeded generators (`instruct_data`), offline and
  CPU-sized, with a control task of a pre-trained ability that no task trains.
- `trace`: the TRACE benchmark from the data root, laid out as TRACE ships it:
  `<root>/<Task>/{train,eval,test}.json`, each a JSON list of {"prompt": ..., "answer": ...};
  the official task order and answer lengths (`trace_tasks.TRACE_TASKS`). eval.json is not used
  (TRACE scores test.json); a task's labels.json, where present, must be JSON and is recorded by
  hash (the scorers compare against each answer, so they do not need it).

Both take `setting`, the protocol setting (`trace_tasks.SETTINGS`): whose TRACE code the scorers,
decoding and MeetingBank's truncation follow, MoRAM's (`moram`, the default) or the original
TRACE code (`trace`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cl_bench import ScenarioContext, ScenarioSpec, UserError, hookimpl

# 2: protocol settings (issue 34): scorers, decoding and MeetingBank's truncation follow `setting`
VERSION = "2"
MAX_SPLIT_BYTES = 256 << 20  # TRACE's largest split is a few MiB; a bigger file is not one
MORAM_DECODING = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3}  # the moram setting's, tunable on `trace`


# ------------------------------------------------------------------------------------ settings


def check_setting(params: Mapping[str, Any]) -> None:
    from cl_bench import unknown_name

    from .trace_tasks import SETTINGS

    if params["setting"] not in SETTINGS:
        raise unknown_name("protocol setting", params["setting"], SETTINGS, hint="(scenario.setting: moram, MoRAM's TRACE code, or trace, the original TRACE code)")


def text_task(task, setting: str, train, test):
    """A `TextTask` of a TRACE(-shaped) task under a protocol setting: its scorer, and the
    truncation of its prompts where the setting treats them apart (MoRAM's MeetingBank)."""
    from cl_bench import TextTask

    from .trace_tasks import LONG_PROMPT, scorer_for

    prompts = LONG_PROMPT[setting] if task.long_prompt else {}
    return TextTask(task.name, scorer_for(setting, task.answer), task.max_new_tokens, train, test, **prompts)


def prompt_notes(tasks, setting: str) -> dict[str, Any]:
    """The tasks whose prompts are truncated apart, for the stream's metadata."""
    from .trace_tasks import LONG_PROMPT

    if not LONG_PROMPT[setting]:
        return {}
    return {"long_prompts": {t.name: dict(LONG_PROMPT[setting]) for t in tasks if t.long_prompt}}


# ------------------------------------------------------------------------------------ embedded


EMBEDDED_TASKS = 4
EMBEDDED_DEFAULTS: dict[str, Any] = {"tasks": EMBEDDED_TASKS, "train_size": 500, "test_size": 100, "control_size": 100, "setting": "moram"}


def check_embedded(params: Mapping[str, Any]) -> None:
    from .instruct_data import TASKS

    check_setting(params)
    if not 1 <= params["tasks"] <= len(TASKS):
        raise UserError(f"scenario.tasks for embedded-instruct must be 1 to {len(TASKS)}, got {params['tasks']}")
    for key in ("train_size", "test_size", "control_size"):
        if params[key] < 1:
            raise UserError(f"scenario.{key} must be at least 1, got {params[key]}")


def build_embedded(params: dict[str, Any], context: ScenarioContext):
    from cl_bench import assemble_text_stream

    from .instruct_data import CONTROL, TASKS, examples
    from .trace_tasks import DECODING

    setting = params["setting"]
    chosen = TASKS[: params["tasks"]]
    tasks = [text_task(t, setting, examples(t, 0, params["train_size"], "train"), examples(t, 0, params["test_size"], "test")) for t in chosen]
    control = text_task(CONTROL, setting, (), examples(CONTROL, 0, params["control_size"], "test"))
    metadata = {"generator": "cl_bench.scenarios.instruct_data (seeded; data seed 0)", "tasks": {t.name: t.summary for t in (*chosen, CONTROL)}, **prompt_notes(chosen, setting)}
    return assemble_text_stream(
        "embedded-instruct", VERSION, tasks, controls=[control], encode_examples=context.encode_examples, decoding=DECODING[setting], metadata=metadata, params=params
    )


# ------------------------------------------------------------------------------------ TRACE


def trace_order() -> list[str]:
    from .trace_tasks import TRACE_TASKS

    return [t.name for t in TRACE_TASKS]


def _trace_task(name: str):
    from cl_bench import unknown_name

    from .trace_tasks import TRACE_TASKS

    known = {t.name: t for t in TRACE_TASKS}
    if name not in known:
        raise unknown_name("TRACE task", name, list(known), hint="(in scenario.order)")
    return known[name]


def check_trace_params(params: Mapping[str, Any]) -> None:
    check_setting(params)
    if params["setting"] != "moram":
        for key, value in MORAM_DECODING.items():
            if params[key] != value:
                raise UserError(f"scenario.{key} is the moram setting's greedy decoding; the trace setting samples at temperature 0.1 without it (leave it at {value} or use scenario.setting=moram)")
    order = params["order"]
    if not order:
        raise UserError("scenario.order for trace must name at least one task")
    if len(set(order)) != len(order):
        raise UserError(f"scenario.order for trace repeats a task: {','.join(order)}")
    for name in order:
        _trace_task(name)
    for key in ("train_size", "test_size"):
        if params[key] < 0:
            raise UserError(f"scenario.{key} must be 0 (all) or more, got {params[key]}")


def check_trace(data_root: str | None) -> str | None:
    from .image_folder import no_root_message

    if data_root is None:
        return no_root_message("trace", "the TRACE tasks, <root>/<Task>/{train,eval,test}.json (e.g. LLM-CL-Benchmark_500 unpacked)")
    if not Path(data_root).is_dir():
        return f"trace: the data root {data_root} is not a folder; unpack TRACE (LLM-CL-Benchmark_500) there"
    from .trace_tasks import TRACE_TASKS

    # Which tasks a run reads depends on scenario.order (its files are checked and hashed by the
    # plan, `trace_files`); the root holds TRACE when at least one task folder is complete.
    if not any(all((Path(data_root) / t.folder / f"{split}.json").is_file() for split in ("train", "test")) for t in TRACE_TASKS):
        return f"trace: {data_root} holds none of TRACE's task folders (<Task>/train.json and test.json, e.g. C-STANCE/); unpack TRACE (LLM-CL-Benchmark_500) there"
    return None


def trace_files(params: Mapping[str, Any], data_root: str | None) -> list[str]:
    """The files a run of these parameters reads (their sha256 is part of its run id)."""
    root = Path(data_root or "")
    files = []
    for name in params["order"]:
        folder = root / _trace_task(name).folder
        files += [str(folder / "train.json"), str(folder / "test.json")]
        if (folder / "labels.json").is_file():
            files.append(str(folder / "labels.json"))
    return files


def _read_json(path: Path) -> tuple[Any, str]:
    """A TRACE file's JSON and its sha256, from one read."""
    if path.stat().st_size > MAX_SPLIT_BYTES:
        raise UserError(f"trace: {path} is over {MAX_SPLIT_BYTES >> 20} MiB; a TRACE split is a few MiB")
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8")), hashlib.sha256(raw).hexdigest()
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"trace: {path} is not a JSON file ({type(exc).__name__}); restore it from the TRACE archive") from None


def read_split(path: Path) -> tuple[list[dict[str, str]], str]:
    """One TRACE split: a JSON list of {"prompt", "answer"} objects (other keys are kept out), and the file's sha256."""
    if not path.is_file():
        raise UserError(f"trace: {path} is missing; unpack TRACE into the data root")
    data, sha256 = _read_json(path)
    if not isinstance(data, list) or not data:
        raise UserError(f"trace: {path} must hold a non-empty JSON list of {{prompt, answer}} objects")
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not isinstance(item.get("answer"), str):
            raise UserError(f"trace: {path} item {index} is not an object with string 'prompt' and 'answer'")
    return [{"prompt": item["prompt"], "answer": item["answer"]} for item in data], sha256


def build_trace(params: dict[str, Any], context: ScenarioContext):
    from cl_bench import assemble_text_stream

    from .trace_tasks import DECODING

    setting = params["setting"]
    root = Path(context.data_root or "")
    tasks, files = [], {}
    for name in params["order"]:
        task = _trace_task(name)
        splits = {}
        for split, size in (("train", params["train_size"]), ("test", params["test_size"])):
            examples, sha256 = read_split(root / task.folder / f"{split}.json")
            splits[split] = examples[:size] if size else examples
            files[f"{task.folder}/{split}.json"] = {"examples": len(examples), "used": len(splits[split]), "sha256": sha256}
        labels = root / task.folder / "labels.json"
        if labels.is_file():
            files[f"{task.folder}/labels.json"] = {"sha256": _read_json(labels)[1]}
        tasks.append(text_task(task, setting, splits["train"], splits["test"]))
    decoding = {key: params[key] for key in MORAM_DECODING} if setting == "moram" else DECODING[setting]
    metadata = {
        "layout": "<root>/<Task>/{train,eval,test}.json (+ labels.json) as TRACE ships it; train and test are read",
        "files": files,
        "official_epochs": {t: _trace_task(t).epochs for t in params["order"]},
        **prompt_notes([_trace_task(t) for t in params["order"]], setting),
    }
    return assemble_text_stream("trace", VERSION, tasks, encode_examples=context.encode_examples, decoding=decoding, metadata=metadata, params=params)


def count_trace(params: Mapping[str, Any]) -> int:
    return len(params["order"])


def count_embedded(params: Mapping[str, Any]) -> int:
    return params["tasks"]


@hookimpl
def cl_bench_scenarios() -> list[ScenarioSpec]:
    return [
        ScenarioSpec(
            name="embedded-instruct",
            factory=build_embedded,
            summary="LLM track default: 4 TRACE-shaped instruction tasks from seeded generators (stance, meeting, code, simplify) and a copy control task; offline; scenario.setting=moram|trace",
            protocol="instruct",
            num_tasks=EMBEDDED_TASKS,
            defaults=EMBEDDED_DEFAULTS,
            version=VERSION,
            check_params=check_embedded,
            count_tasks=count_embedded,
        ),
        ScenarioSpec(
            name="trace",
            factory=build_trace,
            summary="TRACE (8 tasks: C-STANCE ... 20Minuten) from the data root in TRACE's layout; scorers and decoding of scenario.setting=moram (MoRAM's code) or trace (the original)",
            protocol="instruct",
            num_tasks=8,
            defaults={"order": trace_order(), "train_size": 0, "test_size": 0, "setting": "moram", **MORAM_DECODING},
            version=VERSION,
            check_data=check_trace,
            data_files=trace_files,
            check_params=check_trace_params,
            count_tasks=count_trace,
        ),
    ]
