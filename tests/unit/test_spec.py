"""Typed parameters, run configuration and configuration files."""

import json

import pytest

from cl_bench.config.loading import load_config_file
from cl_bench.config.run_config import RunConfig, data_root_or_env
from cl_bench.contracts.params import TRAIN_DEFAULTS, coerce, resolve_params
from cl_bench.contracts.specs import MethodSpec
from cl_bench.errors import UserError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [("8", 1, 8), (8.0, 1, 8), ("0.5", 1.0, 0.5), (3, 1.0, 3.0), ("true", False, True), ("off", True, False), ("x", "y", "x"), ("q,k , v", ["q"], ["q", "k", "v"]), ([1, 2], [0], [1, 2])],
)
def test_values_take_the_type_of_their_default(value, default, expected):
    assert coerce("p", value, default) == expected
    assert type(coerce("p", value, default)) is type(expected)


@pytest.mark.parametrize(("value", "default"), [("abc", 1), (1.5, 1), (True, 1), ("maybe", False), ("1e", 1.0), (3, "s"), ({"a": 1}, [1])])
def test_wrong_types_are_one_line_errors_naming_the_expected_type(value, default):
    with pytest.raises(UserError) as info:
        coerce("method.rank", value, default)
    message = str(info.value)
    assert "method.rank expects" in message and "\n" not in message


def test_unknown_parameter_suggests_the_closest_name():
    with pytest.raises(UserError, match=r"unknown method parameter 'rnak'; did you mean 'rank'\?"):
        resolve_params("method 'x'", "method", {"rank": 8, "alpha": 16.0}, {"rnak": 4})


def test_method_params_resolve_through_defaults_profiles_and_user_values():
    spec = MethodSpec(name="m", factory=dict, summary="", defaults={"rank": 8, "lr": 1e-3}, profiles={"tiny-clip": {"lr": 1e-2, "iters": 10}})
    assert spec.resolve("other", {})["lr"] == 1e-3
    tiny = spec.resolve("tiny-clip", {"rank": "4"})
    assert (tiny["lr"], tiny["iters"], tiny["rank"], tiny["batch_size"]) == (1e-2, 10, 4, TRAIN_DEFAULTS["batch_size"])


def test_run_config_set_routes_dotted_keys_and_checks_fields():
    config = RunConfig()
    config.set("method.rank", "4")
    config.set("scenario.order", "II")
    config.set("seed", "3")
    config.set("iters", "7")
    assert config.method_params == {"rank": "4"} and config.scenario_params == {"order": "II"}
    assert (config.seed, config.iters) == (3, 7)
    with pytest.raises(UserError, match="unknown setting 'sed'; did you mean 'seed'"):
        config.set("sed", "1")
    with pytest.raises(UserError, match="seed expects an integer"):
        config.set("seed", "one")


def test_data_root_falls_back_to_the_environment(monkeypatch):
    monkeypatch.delenv("CL_BENCH_DATA", raising=False)
    assert data_root_or_env(None) is None
    monkeypatch.setenv("CL_BENCH_DATA", "/data")
    assert data_root_or_env(None) == "/data" and data_root_or_env("/given") == "/given"


def test_config_files_in_toml_yaml_json_and_result_files(tmp_path):
    (tmp_path / "run.toml").write_text('method = "finetune"\nseed = 2\n[method_params]\nlr = 0.01\n')
    (tmp_path / "run.yaml").write_text("method: finetune\nseed: 2\nmethod_params:\n  lr: 0.01\n")
    (tmp_path / "run.json").write_text(json.dumps({"method": "finetune", "seed": 2, "method_params": {"lr": 0.01}}))
    for schema in ("cl_bench.result/2", "cl_bench.result/1"):  # an older result file still repeats its run
        (tmp_path / f"result-{schema[-1]}.json").write_text(json.dumps({"schema": schema, "config": {"method": "finetune", "seed": 2, "method_params": {"lr": 0.01}}}))
    for name in ("run.toml", "run.yaml", "run.json", "result-2.json", "result-1.json"):
        config = RunConfig.from_dict(load_config_file(str(tmp_path / name)))
        assert (config.method, config.seed, config.method_params) == ("finetune", 2, {"lr": 0.01})


def test_bad_config_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.toml").write_text("method = \n")
    with pytest.raises(UserError, match="cannot be parsed"):
        load_config_file(str(tmp_path / "bad.toml"))
    with pytest.raises(UserError, match="not found"):
        load_config_file(str(tmp_path / "missing.toml"))
    (tmp_path / "run.ini").write_text("x")
    with pytest.raises(UserError, match="use a .toml"):
        load_config_file(str(tmp_path / "run.ini"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="table of settings"):
        load_config_file(str(tmp_path / "list.json"))


def test_scenario_spec_checks_its_resolved_parameters_and_counts_its_tasks():
    from cl_bench.contracts.specs import ScenarioSpec

    seen = []

    def even(params):
        seen.append(dict(params))
        if params["tasks"] % 2:
            raise UserError(f"scenario.tasks must be even, not {params['tasks']}")

    spec = ScenarioSpec(name="s", factory="x:y", summary="", protocol="class-il", num_tasks=4, defaults={"tasks": 4}, check_params=even, count_tasks=lambda p: p["tasks"])
    assert spec.resolve({"tasks": "6"}) == {"tasks": 6} and seen == [{"tasks": 6}]  # checked after typing
    with pytest.raises(UserError, match="must be even, not 3"):
        spec.resolve({"tasks": 3})
    assert spec.task_count({"tasks": 6}) == 6
    fixed = ScenarioSpec(name="f", factory="x:y", summary="", protocol="mtil", num_tasks=3)
    assert fixed.resolve({}) == {} and fixed.task_count({}) == 3  # no count_tasks: the static count
