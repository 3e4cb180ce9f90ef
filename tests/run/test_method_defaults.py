"""A backbone's `method_defaults`: what a method trains with on it unless the method says otherwise."""

from __future__ import annotations

from cl_bench import Method, MethodSpec, RunConfig, Supports, hookimpl, plan
from cl_bench.config.registry import Registry


class Nothing(Method):
    def __init__(self, hparams):
        self.hparams = hparams


class PluginMethods:
    """Two plugin methods on language models: one declares nothing for them, one overrides."""

    @hookimpl
    def cl_bench_methods(self):
        supports = Supports(protocols=("instruct",), backbone_kinds=("causal-lm",))
        return [
            MethodSpec(name="plain", factory=Nothing, summary="no kind_defaults", supports=supports, defaults={"rank": 4, "layers": ["fc"]}),
            MethodSpec(
                name="own",
                factory=Nothing,
                summary="says otherwise",
                supports=supports,
                defaults={"rank": 4},
                kind_defaults={"causal-lm": {"schedule": "cosine", "batch_size": 8}},
            ),
        ]


def resolved(method: str, tmp_path) -> dict:
    return plan(RunConfig(method=method, scenario="embedded-instruct", backbone="tiny-lm", out=str(tmp_path)), Registry([PluginMethods()])).hparams


def test_a_plugin_method_gets_the_language_model_training_defaults_without_declaring_them(tmp_path):
    hparams = resolved("plain", tmp_path)
    # The built-ins' language-model settings (TRACE's batch, constant schedule, no accumulation)...
    assert (hparams["iters"], hparams["batch_size"], hparams["schedule"], hparams["grad_accum"]) == (32, 32, "constant", 1)
    # ...and the backbone's adapter placement for a parameter the method has; none it lacks.
    assert hparams["layers"] == ["q", "k", "v", "out"] and "towers" not in hparams and hparams["rank"] == 4


def test_a_method_kind_defaults_override_the_backbone(tmp_path):
    hparams = resolved("own", tmp_path)
    assert (hparams["schedule"], hparams["batch_size"], hparams["iters"]) == ("cosine", 8, 32)


def test_image_backbones_declare_none_so_clip_runs_resolve_as_before(tmp_path):
    registry = Registry()
    assert registry.get("backbone", "tiny-clip").spec.method_defaults == {}
    hparams = plan(RunConfig(method="seq-lora", scenario="embedded-cil", out=str(tmp_path)), registry).hparams
    assert "schedule" not in hparams and "grad_accum" not in hparams and hparams["towers"] == ["image", "text"]
