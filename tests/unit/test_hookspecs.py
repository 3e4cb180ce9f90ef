"""Every hook is typed, documented, and exercised by a named test."""

import inspect
import re
from pathlib import Path

import pytest

from cl_bench.contracts import hookspecs

pytestmark = pytest.mark.unit

# hook -> tests that call it through a real plugin
HOOK_TESTS = {
    "cl_bench_methods": ["tests.test_plugins:test_installed_third_party_plugin_is_found_and_runs", "tests.test_plugins:test_duplicates_and_wrong_types_are_reported_not_fatal"],
    "cl_bench_scenarios": ["tests.test_plugins:test_builtins_register_through_entry_points", "tests.test_embedded:test_mtil_stream_structure"],
    "cl_bench_backbones": ["tests.test_plugins:test_builtins_register_through_entry_points", "tests.test_backbones:test_vit_b16_without_weights_says_where_to_put_them"],
    "cl_bench_loggers": ["tests.test_loggers:test_mlflow_holds_the_plan_every_row_the_final_metrics_and_the_result_file", "tests.test_loggers:test_unknown_or_uninstalled_loggers_stop_before_any_work"],
    "cl_bench_run_start": ["tests.test_run:test_run_events_reach_loggers_in_order", "tests.test_plugins:test_run_event_failures_are_returned_not_raised"],
    "cl_bench_before_training": ["tests.test_run:test_run_events_reach_loggers_in_order"],
    "cl_bench_experience_end": ["tests.test_run:test_run_events_reach_loggers_in_order"],
    "cl_bench_run_end": ["tests.test_run:test_run_events_reach_loggers_in_order"],
}


def _hooks():
    return {name: fn for name, fn in vars(hookspecs).items() if name.startswith("cl_bench_") and callable(fn)}


def test_every_hook_is_documented_and_typed():
    hooks = _hooks()
    assert set(hooks) == {"cl_bench_methods", "cl_bench_scenarios", "cl_bench_backbones", "cl_bench_loggers", *hookspecs.RUN_EVENTS}
    for name, fn in hooks.items():
        assert len(inspect.getdoc(fn) or "") > 80, f"{name} needs a docstring that explains it"
        signature = inspect.signature(fn)
        assert signature.return_annotation is not inspect.Signature.empty, f"{name} needs a return type"
        assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()), f"{name} needs typed arguments"


def test_every_hook_has_a_test():
    assert set(HOOK_TESTS) == set(_hooks())
    here = Path(__file__).resolve().parents[1]  # tests/, whose area folders hold the named modules
    for hook, tests in HOOK_TESTS.items():
        for target in tests:
            module_name, _, function = target.partition(":")
            source = next(here.rglob(f"{module_name.split('.')[-1]}.py")).read_text(encoding="utf-8")
            assert re.search(rf"^def {function}\(", source, flags=re.M), f"{hook}: missing test {target}"
