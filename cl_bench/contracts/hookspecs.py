"""The pluggy hook specifications of cl_bench.

A plugin is a module (or object) that implements some of these hooks with `@cl_bench.hookimpl`
and is announced in its package's metadata under the entry-point group `cl_bench`::

    [project.entry-points.cl_bench]
    mymethod = "my_package.my_module"

The built-in methods, scenarios, backbones and loggers register through the same entry points.
Spec hooks return lists, so one plugin can contribute several methods or scenarios.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    from cl_bench.contracts.specs import BackboneSpec, LoggerSpec, MethodSpec, ScenarioSpec

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
    """Return the backbones this plugin provides.

    Each `BackboneSpec` says which weights file its parameters select (`weights_file`, hashed by
    the run plan) and how to build the model from parameters and weights (`factory(params,
    weights)`); the model subclasses `cl_bench.Backbone`, the contract the strategy uses. Factories
    must never download anything.
    """


@hookspec
def cl_bench_loggers() -> list[LoggerSpec]:
    """Return the experiment trackers this plugin provides, chosen per run with `--log NAME`.

    Each `LoggerSpec` names a tracker and says how to build, for one run, a plugin object that
    implements the run-event hooks below; it is attached for that run only, so a tracker that is
    installed but not chosen never sees a run.
    """


# Run events: for loggers (files, dashboards, trackers). Each is called between experiences, never
# per iteration; an exception in one is reported and does not stop the run. Every event carries
# `run_id` (the configuration: a forced re-run or a resume has the same one) and `execution_id`
# (new for every call of `run`): key a tracker's runs on `execution_id`, group them by `run_id`.
# As pluggy allows, an implementation may declare only the arguments it uses.


@hookspec
def cl_bench_run_start(run_id: str, execution_id: str, config: dict[str, Any], plan: dict[str, Any]) -> None:
    """A run is about to train (or to resume): everything is checked and built.

    `config` holds the settings as given; `plan` the run as resolved (`RunPlan.record()`, also the
    result file's `plan`): `identity` (what the run id hashes), method, scenario and backbone with
    versions, plugins and typed parameters after profiles (the task count, the weights file and its
    sha256), seed, device, precision, threads, data root, out folder, result path, and
    `first_task` (above 0 when resuming).
    """


@hookspec
def cl_bench_before_training(run_id: str, execution_id: str, row: int, acc_row: list[float], control_row: list[float], timings: dict[str, Any]) -> None:
    """Row 0 of the accuracy and control matrices: the model before any training.

    `row` is 0; `timings` has `eval`, the seconds the row took. Not sent when a resume restores
    the row from its checkpoint.
    """


@hookspec
def cl_bench_experience_end(
    run_id: str, execution_id: str, task: int, row: int, acc_row: list[float], control_row: list[float], timings: dict[str, Any], losses: list[float]
) -> None:
    """One task is trained and evaluated: `task` (0-based) and its matrix row `row` (task + 1).

    `acc_row` has one accuracy (%) per task's test set, `control_row` one per control set;
    `timings` has the task's name and its `train` and `eval` seconds and `iters`; `losses` the
    training loss of each of the task's iterations, in order (empty when nothing trains; after a
    resume, only the iterations this execution ran).
    """


@hookspec
def cl_bench_run_end(run_id: str, execution_id: str, path: str, result: dict[str, Any]) -> None:
    """The run is complete and its result file written: `path`, and `result`, the file's dict.

    Log the final metrics from `result["metrics"]`; the file itself can be kept as an artifact.
    """


RUN_EVENTS = ("cl_bench_run_start", "cl_bench_before_training", "cl_bench_experience_end", "cl_bench_run_end")
