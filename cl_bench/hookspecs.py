"""The pluggy hook specifications of cl_bench.

A plugin is a module (or object) that implements some of these hooks with `@cl_bench.hookimpl`
and is announced in its package's metadata under the entry-point group `cl_bench`::

    [project.entry-points.cl_bench]
    mymethod = "my_package.my_module"

The built-in methods, scenarios and backbones register through the same entry points.
Spec hooks return lists, so one plugin can contribute several methods or scenarios.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .spec import BackboneSpec, MethodSpec, ScenarioSpec

PROJECT = "cl_bench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cl_bench_methods() -> list[MethodSpec]:
    """Return the continual-learning methods this plugin provides.

    Each `MethodSpec` names the method, says how to build its per-run `Method` object
    (`factory(hparams)`), and declares its typed hyper-parameter defaults, per-backbone
    profiles, paper and version. Names must be unique across all plugins.
    """


@hookspec
def cl_bench_scenarios() -> list[ScenarioSpec]:
    """Return the benchmark streams this plugin provides.

    Each `ScenarioSpec` names a stream, its evaluation protocol (class-il, domain-il, mtil or
    x-tail) and task count, and says how to build the `Stream` (`factory(params, context)`) and
    how to check that its data is present without loading it.
    """


@hookspec
def cl_bench_backbones() -> list[BackboneSpec]:
    """Return the CLIP-like backbones this plugin provides.

    Each `BackboneSpec` says how to build a `ClipModel` from its parameters (for example a local
    weights path); factories must never download anything.
    """


@hookspec
def cl_bench_run_event(event: str, payload: dict[str, Any]) -> None:
    """Observe a run: called with `run_start`, `before_training`, `experience_end` and `run_end`.

    Every payload carries `run_id` (the configuration: a forced re-run or a resume has the same
    one) and `execution_id` (new for every call of `run`, so a tracker keys one execution on it
    and groups executions of one configuration by `run_id`).

    - `run_start`: `config` (the settings as given) and `plan` (as resolved: method, scenario and
      backbone with versions and typed parameters after profiles, seed, device, precision, data
      root, out folder, result path, and `first_task`, above 0 when resuming);
    - `before_training`: row 0 of the matrices (`row` 0, `acc_row`, `control_row`, `timings`),
      the model before any training; not sent when a resume restores it;
    - `experience_end`: `task` (0-based), `row` (task + 1), `acc_row`, `control_row`, `timings`;
    - `run_end`: `path` and the whole `result` dict.

    Use it for loggers (files, dashboards); ignore events you do not know. It is called between
    experiences, never per iteration; an exception in it is reported and does not stop the run.
    """
