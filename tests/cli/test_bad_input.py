"""The bad-input campaign: every case must end in exit 2 with one `clbench: error:` line, no
traceback, nothing trained, and no file made, changed or removed anywhere under the test's folder.

Each case is (id, command line, part of the message, files to prepare). `{in}` in a command line is
a folder of prepared inputs, `{tmp}` the test's folder; the command runs with a fresh empty
working folder, so the default `--out runs` would show up in the snapshot too.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from toys import as_partial, as_schema_3, expect_one_line_error, rehash, result_document

from cl_bench import MethodSpec, hookimpl
from cl_bench.cli import main
from cl_bench.running.strategy import ClStrategy

ACC = [[50.0, 40.0], [90.0, 45.0], [80.0, 85.0]]
CONTROL = [[90.0], [88.0], [81.0]]


def _with_tasks(document: dict, tasks: int) -> dict:
    """`document` grown to `tasks` tasks, consistent everywhere (matrices, sizes, metrics)."""
    from cl_bench.results import metrics

    acc = [[50.0] * tasks for _ in range(tasks + 1)]
    control = [[] for _ in range(tasks + 1)]
    names = [f"task {i}" for i in range(tasks)]
    document["scenario"].update(task_order=names, test_sizes=[10] * tasks, control_sets=[])
    document.update(acc_matrix=acc, control_matrix=control, metrics=metrics.compute(acc, None, protocol=document["scenario"]["protocol"], test_sizes=[10] * tasks))
    document["timings"]["experiences"] = [{"task": n, "train": 0.0, "eval": 0.0} for n in names]
    document["params"]["trainable"] = [0] * tasks
    return document


def model_folder(edit_config: Callable[[dict], object] | None = None, drop_tensor: bool = False, config_text: str | None = None, files: dict[str, Callable[[bytes], bytes]] | None = None) -> Callable[[Path], None]:
    """`{in}/lm`: a copy of tiny-lm's folder (a real Hugging Face model folder), edited."""

    def prepare(folder: Path) -> None:
        import shutil

        import cl_bench.backbones.tiny_lm as tiny_lm

        target = folder / "lm"
        shutil.copytree(Path(tiny_lm.__file__).parent, target, ignore=shutil.ignore_patterns("*.py", "__pycache__", "record.json"))
        config_path = target / "config.json"
        if edit_config:
            config = json.loads(config_path.read_text())
            edit_config(config)
            config_path.write_text(json.dumps(config))
        if config_text is not None:
            config_path.write_text(config_text)
        for name, change in (files or {}).items():  # a file of the folder rewritten from its bytes
            (target / name).write_bytes(change((target / name).read_bytes()))
        if drop_tensor:
            from safetensors.torch import load_file, save_file

            tensors = load_file(target / "model.safetensors")
            tensors.pop(sorted(k for k in tensors if "layers.0.mlp" in k)[0])
            save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})

    return prepare


def _published_run_id() -> str:
    return result_document(copy.deepcopy(ACC), copy.deepcopy(CONTROL), method="alpha")["run_id"]  # what leaderboard_with publishes


def result_file(folder: Path, name: str, edit: Callable[[dict], None] | None = None, **kwargs) -> Path:
    document = result_document(copy.deepcopy(ACC), copy.deepcopy(CONTROL), **kwargs)
    if edit:
        edit(document)
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def text_file(name: str, content: str | bytes) -> Callable[[Path], None]:
    def prepare(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return prepare


def result(name: str, edit: Callable[[dict], None] | None = None, **kwargs) -> Callable[[Path], None]:
    return lambda folder: result_file(folder, name, edit, **kwargs)


def leaderboard_with(*prepares: Callable[[Path], None], reported: str | None = None) -> Callable[[Path], None]:
    """A published leaderboard `{in}/lb` (one result) plus the given inputs."""

    def prepare(folder: Path) -> None:
        board = folder / "lb"
        board.mkdir()
        if reported is not None:
            (board / "reported.json").write_text(reported)
        source = result_file(folder / "published", "first", method="alpha")
        if reported is None:
            assert main(["publish", str(source), "--leaderboard", str(board)]) == 0
        for each in prepares:
            each(folder)

    return prepare


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
) + "seed: *i\n"

RUN = ["run", "--quiet", "--out", "{tmp}/out"]


def older(document: dict) -> bool:
    """Make `document` a schema-2 file: no recorded plan, so its names and run id are checked only
    as file names (a later file's run id must also be the hash of its identity)."""
    converted = as_schema_3(document)
    document.clear()
    document.update(converted)
    document.pop("plan")
    document["schema"] = "cl_bench.result/2"
    return True


# Names a result file could use to escape its folder, in the schema-2 files that are still read.
NAME_EDITS = {
    "run-id-escapes": (lambda d: older(d) and d.update(run_id="../../escaped"), "run_id '../../escaped.json' cannot name a file"),
    "method-name-escapes": (lambda d: older(d) and (d["method"].update(name="../../x"), d["config"].update(method="../../x")), "method name '../../x' cannot name a file"),
    "scenario-absolute": (lambda d: older(d) and (d["scenario"].update(name="/tmp/x"), d["config"].update(scenario="/tmp/x")), "scenario name '/tmp/x' cannot name a file"),
    "scenario-nul": (lambda d: older(d) and (d["scenario"].update(name="s\x00x"), d["config"].update(scenario="s\x00x")), "scenario name 's\\x00x' cannot name a file"),
    "method-300-chars": (lambda d: older(d) and (d["method"].update(name="m" * 300), d["config"].update(method="m" * 300)), "must be 1 to 64 characters long"),
    "backbone-spaces": (lambda d: older(d) and (d["backbone"].update(name="a b"), d["config"].update(backbone="a b")), "backbone name 'a b' cannot name a file"),
    "method-markup": (lambda d: older(d) and (d["method"].update(name="<script>x</script>"), d["config"].update(method="<script>x</script>")), "method name '<script>x</script>' cannot name a file"),
}

CASES: list[tuple[str, list[str], str, Callable[[Path], None] | None]] = [
    # ------------------------------------------------------------------ run: names and settings
    ("run-unknown-method", [*RUN, "--method", "mooram"], "unknown method 'mooram'; did you mean 'moram'?", None),
    ("run-method-path", [*RUN, "--method", "../../../escape"], "unknown method '../../../escape'", None),
    ("run-unknown-scenario", [*RUN, "--scenario", "embedded-mtl"], "did you mean 'embedded-mtil'", None),
    ("run-unknown-backbone", [*RUN, "--backbone", "tiny-clp"], "did you mean 'tiny-clip'", None),
    ("run-misspelled-param", [*RUN, "--set", "method.rnak=2"], "did you mean 'rank'", None),
    ("run-param-type", [*RUN, "--set", "method.rank=two"], "method.rank expects an integer", None),
    ("run-set-without-value", [*RUN, "--set", "nonsense"], "--set expects key=value", None),
    ("run-set-empty-key", [*RUN, "--set", "=3"], "--set expects key=value", None),
    ("run-unknown-setting", [*RUN, "--set", "sed=1"], "unknown setting 'sed'; did you mean 'seed'", None),
    ("run-unknown-backbone-param", [*RUN, "--set", "backbone.nonsense=1"], "unknown backbone parameter 'nonsense'", None),
    ("run-unknown-scenario-param", [*RUN, "--set", "scenario.tsks=2"], "unknown scenario parameter 'tsks'", None),
    ("run-cil-tasks-not-dividing", [*RUN, "--scenario", "embedded-cil", "--set", "scenario.tasks=3"], "scenario.tasks for embedded-cil must divide its 10 classes: 1, 2, 5 or 10", None),
    ("run-cifar-tasks-not-dividing", [*RUN, "--scenario", "split-cifar100", "--set", "scenario.tasks=7", "--data-root", "/nowhere"], "scenario.tasks for split-cifar100 must divide its 100 classes", None),
    ("run-xtail-shots-over", [*RUN, "--scenario", "embedded-xtail", "--set", "scenario.shots=81"], "scenario.shots=81 exceeds the 80 training images per class of letters", None),
    ("run-mtil-order", [*RUN, "--scenario", "mtil", "--set", "scenario.order=III", "--data-root", "/nowhere"], "scenario.order for mtil must be I or II, not 'III'", None),
    ("run-unknown-protocol-setting", [*RUN, "--backbone", "tiny-lm", "--scenario", "embedded-instruct", "--method", "zeroshot", "--set", "scenario.setting=moran"], "unknown protocol setting 'moran'; did you mean 'moram'?", None),
    ("run-trace-setting-with-penalty", [*RUN, "--backbone", "tiny-lm", "--scenario", "trace", "--method", "zeroshot", "--data-root", "/nowhere", "--set", "scenario.setting=trace", "--set", "scenario.repetition_penalty=1.5"], "scenario.repetition_penalty is the moram setting's greedy decoding", None),
    ("ls-set-method", ["ls", "--set", "method.rank=2"], "ls --set takes scenario.X=VALUE (a stream parameter), got 'method.rank=2'", None),
    ("ls-set-unknown", ["ls", "--set", "scenario.tsks=2"], "unknown scenario parameter 'tsks'; did you mean 'tasks'?", None),
    ("run-lr-negative", [*RUN, "--set", "method.lr=-1"], "method.lr must be greater than 0.0, got -1.0", None),
    ("run-lr-zero", [*RUN, "--set", "method.lr=0"], "method.lr must be greater than 0.0", None),
    ("run-lr-nan", [*RUN, "--set", "method.lr=nan"], "method.lr must be a finite number, got 'nan'", None),
    ("run-lr-inf", [*RUN, "--set", "method.lr=inf"], "method.lr must be a finite number, got 'inf'", None),
    ("run-temperature-huge", [*RUN, "--set", "method.temperature=1e999"], "method.temperature must be a finite number", None),
    ("run-weight-decay-negative", [*RUN, "--set", "method.weight_decay=-0.1"], "method.weight_decay must be at least 0.0", None),
    ("run-warmup-negative", [*RUN, "--set", "method.warmup_iters=-5"], "method.warmup_iters must be at least 0", None),
    ("run-eval-batch-zero", [*RUN, "--set", "eval_batch_size=0"], "eval_batch_size must be at least 1", None),
    ("run-workers-negative", [*RUN, "--set", "num_workers=-1"], "num_workers must be 0 or more", None),
    ("run-seq-lora-rank-zero", [*RUN, "--method", "seq-lora", "--set", "method.rank=0"], "method 'seq-lora': LoRA rank must be at least 1", None),
    ("run-moram-topk-zero", [*RUN, "--method", "moram", "--set", "method.topk=0"], "method 'moram': rank and topk must be at least 1", None),
    ("run-moram-temperature-zero", [*RUN, "--method", "moram", "--set", "method.temperature=0"], "the temperature positive", None),
    ("run-l2p-top-n-over-pool", [*RUN, "--method", "l2p", "--set", "method.top_n=20"], "method 'l2p': top_n must be between 1 and the pool size 10", None),
    ("run-l2p-init", [*RUN, "--method", "l2p", "--set", "method.init=gauss"], "unknown prompt init 'gauss'", None),
    ("run-moe-lora-top-k", [*RUN, "--method", "moe-lora", "--set", "method.top_k=0"], "method 'moe-lora': top_k must be between 1", None),
    ("run-moe-lora-expert-kind", [*RUN, "--method", "moe-lora", "--set", "method.expert=mlp"], "expert must be one of", None),
    ("run-eblora-threshold", [*RUN, "--method", "eblora", "--set", "method.energy_threshold=2"], "energy_threshold must be in (0, 1]", None),
    ("run-codyra-sparsity", [*RUN, "--method", "codyra", "--set", "method.sparsity=-0.1"], "method.sparsity must be at least 0", None),
    ("run-codyra-threshold", [*RUN, "--method", "codyra", "--set", "method.threshold=hard"], "method.threshold must be one of paper, code", None),
    ("run-hide-lora-inference", [*RUN, "--backbone", "tiny-lm", "--scenario", "embedded-instruct", "--method", "hide-lora", "--set", "method.task_inference=oracle"], "method.task_inference must be one of nearest-mean, latest", None),
    ("run-treelora-reg", [*RUN, "--backbone", "tiny-lm", "--scenario", "embedded-instruct", "--method", "treelora", "--set", "method.reg=-1"], "method.reg must be 0 or more", None),
    ("run-finetune-towers", [*RUN, "--method", "finetune", "--set", "method.towers=none"], "method.towers must be one of", None),
    ("run-seed-2-64", [*RUN, "--seed", str(2**64)], "seed must be between 0 and 4294967295", None),
    ("run-seed-2-63", [*RUN, "--seed", str(2**63)], "seed must be between 0 and 4294967295", None),
    ("run-seed-negative", [*RUN, "--seed", "-1"], "seed must be between 0", None),
    ("run-seed-word", [*RUN, "--seed", "one"], "seed expects an integer", None),
    ("run-iters-zero", [*RUN, "--iters", "0"], "method.iters must be at least 1", None),
    ("run-iters-fraction", [*RUN, "--iters", "1.5"], "iters expects an integer", None),
    ("run-batch-size-zero", [*RUN, "--batch-size", "0"], "method.batch_size must be at least 1", None),
    ("run-threads-zero", [*RUN, "--threads", "0"], "threads must be between 1 and 1024, got 0", None),
    ("run-threads-huge", [*RUN, "--threads", "100000"], "threads must be between 1 and 1024, got 100000", None),
    ("run-iters-huge", [*RUN, "--iters", str(10**12)], "method.iters must be at most 10,000,000", None),
    ("run-batch-size-huge", [*RUN, "--batch-size", str(10**9)], "method.batch_size must be at most 1,000,000", None),
    ("run-drawn-examples-huge", [*RUN, "--iters", "10000000", "--batch-size", "1000"], "must be at most 2^31 examples per experience", None),
    ("run-set-huge-key", [*RUN, "--set", "k" * 120_000 + "=1"], "unknown setting 'kkkk", None),
    ("validate-empty-folder", ["validate", "{in}/empty"], "no result files under", lambda folder: (folder / "empty").mkdir()),
    ("run-threads-word", [*RUN, "--threads", "many"], "threads expects an integer", None),
    ("run-device-meta", [*RUN, "--device", "meta"], "unknown device 'meta': use auto, cpu, cuda or cuda:N", None),
    ("run-device-mps", [*RUN, "--device", "mps"], "unknown device 'mps'", None),
    ("run-device-word", [*RUN, "--device", "gpu"], "unknown device 'gpu'", None),
    ("run-device-cuda-absent", [*RUN, "--device", "cuda:0"], "CUDA is not available", None),
    ("run-precision-unknown", [*RUN, "--precision", "fp8"], "precision must be", None),
    ("run-precision-fp16-cpu", [*RUN, "--device", "cpu", "--precision", "fp16"], "precision fp16 needs a CUDA device", None),
    ("run-out-dev-null", ["run", "--quiet", "--out", "/dev/null"], "--out /dev/null is not a folder", None),
    ("run-out-regular-file", ["run", "--quiet", "--out", "{in}/file"], "is not a folder", text_file("file", "x")),
    ("run-out-below-file", ["run", "--quiet", "--out", "{in}/file/runs"], "which is not a folder", text_file("file", "x")),
    ("run-out-unwritable", ["run", "--quiet", "--out", "/proc/clbench-runs"], "cannot write in /proc", None),
    ("run-missing-weights", [*RUN, "--backbone", "clip-vit-b16", "--pretrained", "/nowhere/weights.safetensors"], "/nowhere/weights.safetensors not found", None),
    ("run-missing-data", [*RUN, "--scenario", "split-cifar100", "--data-root", "/nowhere"], "/nowhere", None),
    ("run-format-unknown", [*RUN, "--format", "pdf"], "invalid choice: 'pdf'", None),
    ("run-unknown-flag", [*RUN, "--itres", "3"], "unrecognized arguments: --itres", None),
    # ------------------------------------------------------------------ run --config
    ("config-missing", [*RUN, "--config", "/nowhere/run.toml"], "config file '/nowhere/run.toml' not found", None),
    ("config-suffix", [*RUN, "--config", "{in}/run.txt"], "use a .toml, .yaml or .json file", text_file("run.txt", "seed = 1")),
    ("config-not-utf8", [*RUN, "--config", "{in}/run.toml"], "is not UTF-8 text", text_file("run.toml", b"seed = 1\n# \xff\xfe\n")),
    ("config-toml-syntax", [*RUN, "--config", "{in}/run.toml"], "cannot be parsed", text_file("run.toml", "seed = = 1")),
    ("config-yaml-syntax", [*RUN, "--config", "{in}/run.yaml"], "cannot be parsed", text_file("run.yaml", "seed: [1,\n")),
    ("config-json-list", [*RUN, "--config", "{in}/run.json"], "must hold a table of settings", text_file("run.json", "[1, 2]")),
    ("config-other-schema", [*RUN, "--config", "{in}/run.json"], "is a 'acme.experiment/3' document", text_file("run.json", json.dumps({"schema": "acme.experiment/3", "config": {"seed": 1}}))),
    ("config-billion-laughs", [*RUN, "--config", "{in}/run.yaml"], "expands to over 10000 values", text_file("run.yaml", BILLION_LAUGHS)),
    ("config-deep-json", [*RUN, "--config", "{in}/run.json"], "cannot be parsed", text_file("run.json", nested(100_000))),
    ("config-huge", [*RUN, "--config", "{in}/run.toml"], "is over 1 MiB", text_file("run.toml", "# " + "x" * (1 << 20) + "\n")),
    ("config-unknown-key", [*RUN, "--config", "{in}/run.json"], "unknown setting 'sed'", text_file("run.json", json.dumps({"sed": 1}))),
    ("config-wrong-type", [*RUN, "--config", "{in}/run.json"], "seed expects an integer", text_file("run.json", json.dumps({"seed": [1, 2]}))),
    ("config-params-not-table", [*RUN, "--config", "{in}/run.json"], "'method_params' must be a table", text_file("run.json", json.dumps({"method_params": 3}))),
    ("config-long-list-echo", [*RUN, "--config", "{in}/run.yaml"], "seed expects an integer (default 0), got [1, 1, 1, 1, 1, 1, 1, 1, ...]", text_file("run.yaml", "seed: [" + ", ".join(["1"] * 9000) + "]\n")),
    ("config-alias-echo", [*RUN, "--config", "{in}/run.yaml"], "seed expects an integer (default 0), got [[1, 1, 1], [[1, 1, 1], [1, 1, 1], [1, 1, 1]],", text_file("run.yaml", "seed: [&a [1, 1, 1], &b [*a, *a, *a], &c [*b, *b, *b], &d [*c, *c, *c], [*d, *d, *d]]\n")),
    ("config-huge-echo", [*RUN, "--config", "{in}/run.json"], "seed expects an integer (default 0), got '" + "9" * 20, text_file("run.json", json.dumps({"seed": "9" * 5000 + "x"}))),
    # ------------------------------------------------------------------ validate
    ("validate-missing", ["validate", "{in}/none.json"], "none.json' not found", None),
    ("validate-not-json", ["validate", "{in}/r.json"], "not a valid JSON result file", text_file("r.json", "{not json")),
    ("validate-not-utf8", ["validate", "{in}/r.json"], "codec can't decode byte 0xff", text_file("r.json", b'{"a": "\xff"}')),
    ("validate-401-digits", ["validate", "{in}/r.json"], "accuracies are percentages in [0, 100]", result("r", lambda d: d["acc_matrix"][1].__setitem__(0, 10**400))),
    ("validate-huge-metric", ["validate", "{in}/r.json"], "metric 'last' is", result("r", lambda d: d["metrics"].__setitem__("last", 10**400))),
    ("validate-deep-nesting", ["validate", "{in}/r.json"], "JSON nested too deeply", text_file("r.json", nested(100_000))),
    ("validate-nan", ["validate", "{in}/r.json"], "NaN is not allowed in a result file", text_file("r.json", '{"schema": NaN}')),
    ("validate-schema", ["validate", "{in}/r.json"], "schema is 'cl_bench.result/0'", result("r", lambda d: d.update(schema="cl_bench.result/0"))),
    ("validate-older-schema", ["validate", "{in}/r.json"], "older cl_bench without the test-set sizes", result("r", lambda d: d.update(schema="cl_bench.result/1"))),
    ("validate-test-sizes", ["validate", "{in}/r.json"], "scenario.test_sizes must hold 2 positive integers", result("r", lambda d: d["scenario"].update(test_sizes=[10, 0]))),
    ("validate-protocol", ["validate", "{in}/r.json"], "scenario.protocol is 'class-IL'; it must be one of", result("r", lambda d: d["scenario"].update(protocol="class-IL"))),
    ("validate-class-il-avg", ["validate", "{in}/r.json"], "metric 'avg' is", result("r", lambda d: d["scenario"].update(protocol="class-il"))),
    ("validate-tampered", ["validate", "{in}/r.json"], "the file was edited or is corrupt", result("r", lambda d: d["metrics"].__setitem__("last", 1.0))),
    ("validate-partial-with-metrics", ["validate", "{in}/r.json"], "a partial result carries no metrics", result("r", lambda d: as_partial(d, keep_metrics=True))),
    ("validate-not-an-object", ["validate", "{in}/r.json"], "a result file holds one JSON object", text_file("r.json", "[]")),
    # ------------------------------------------------------------------ report
    ("report-missing-path", ["report", "{in}/nothing"], "is neither a result file nor a folder", None),
    ("report-empty-folder", ["report", "{in}/empty"], "no result files under", lambda folder: (folder / "empty").mkdir()),
    ("report-unknown-metric", ["report", "{in}/r.json", "--metrics", "lst"], "unknown metric 'lst'; did you mean 'last'?", result("r")),
    ("report-plot-onto-file", ["report", "{in}/r.json", "--plot", "{in}/r.json"], "--plot", result("r")),
    ("validate-run-id-edited", ["validate", "{in}/r.json"], "but the run's settings hash to", result("r", lambda d: d.update(run_id=d["run_id"][:-2] + "zz"))),
    ("validate-plan-seed-edited", ["validate", "{in}/r.json"], "plan.identity.seed is 5 but seed is 0", result("r", lambda d: (d.update(as_schema_3(d)), d.pop("execution", None), d["plan"]["identity"].update(seed=5)))),
    ("validate-precision-edited", ["validate", "{in}/r.json"], "the run's settings hash to", result("r", lambda d: d["hardware"].update(precision="bf16"))),
    ("report-plot-run-id-escapes", ["report", "{in}/r.json", "--plot", "{in}/plots"], "run_id '../../escaped' cannot name a file", result("r", lambda d: older(d) and d.update(run_id="../../escaped"))),
    ("report-format-unknown", ["report", "{in}/r.json", "--format", "docx"], "invalid choice: 'docx'", result("r")),
    ("report-tampered", ["report", "{in}/r.json"], "the file was edited or is corrupt", result("r", lambda d: d["metrics"].__setitem__("bwt", 5.0))),
    ("report-only-partial", ["report", "{in}"], "no complete result among 1 file(s)", result("r", as_partial)),
    ("report-timings-malformed", ["report", "{in}/r.json"], "timings.experiences must be a list of objects", result("r", lambda d: d["timings"].update(experiences=[{"train": [1]}]))),
    ("publish-claims-published-run-id", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "is already published (run id", leaderboard_with(result("r", lambda d: (older(d), d.update(run_id=_published_run_id())), method="alpha", hyperparameters={"rank": 99}))),
    ("report-too-many-tasks", ["report", "{in}/r.json", "--plot", "{in}/plots"], "a result holds at most 100 tasks", result("r", lambda d: rehash(_with_tasks(d, 300)))),
    ("lm-folder-auto-map", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "names its own model code (auto_map); cl_bench never runs code", model_folder(lambda c: c.update(auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"}))),
    ("lm-folder-quantized", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "describes a quantized model (quantization_config)", model_folder(lambda c: c.update(quantization_config={"quant_method": "bitsandbytes"}))),
    ("lm-folder-vocab-huge", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "vocab_size must be an integer from 1 to 4,194,304, got 1000000000", model_folder(lambda c: c.update(vocab_size=10**9))),
    ("lm-folder-layers-negative", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "num_hidden_layers must be an integer from 1 to 1,024, got -1", model_folder(lambda c: c.update(num_hidden_layers=-1))),
    ("lm-folder-hidden-text", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "hidden_size must be an integer from 1 to 65,536, got 'abc'", model_folder(lambda c: c.update(hidden_size="abc"))),
    ("lm-folder-config-list", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "must hold a JSON object, not list", model_folder(config_text="[1, 2]")),
    ("lm-folder-pickle-shard", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "must map every weight to a .safetensors shard in the folder; cl_bench never loads pickled weights", lambda folder: (model_folder()(folder), (folder / "lm" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": "pytorch_model-00001.bin"}})))),
    ("lm-folder-tokenizer-list", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "cannot load a language model from", model_folder(files={"tokenizer.json": lambda _: b"[1, 2, 3]"})),
    ("lm-folder-weights-truncated", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "incomplete metadata, file not fully covered", model_folder(files={"model.safetensors": lambda data: data[: len(data) // 2]})),
    ("lm-folder-weights-header-huge", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "header too large", model_folder(files={"model.safetensors": lambda data: (2**40).to_bytes(8, "little") + data[8:]})),
    ("lm-folder-weights-header-garbage", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "invalid UTF-8 in header", model_folder(files={"model.safetensors": lambda data: data[:8] + b"{not json" + data[18:]})),
    ("lm-folder-missing-tensor", [*RUN, "--backbone", "hf-causal-lm", "--pretrained", "{in}/lm", "--scenario", "embedded-instruct", "--method", "zeroshot"], "the weights do not fill the model (1 tensor(s) missing", model_folder(drop_tensor=True)),
    ("sweep-ray-closed-port", ["sweep", "--methods", "zeroshot", "--scenarios", "embedded-dil", "--seeds", "0", "--engine", "ray", "--quiet", "--out", "{tmp}/out", "--address", "127.0.0.1:9"], "cannot reach the Ray cluster at 127.0.0.1:9", None),
    ("sweep-ray-address-shape", ["sweep", "--methods", "zeroshot", "--scenarios", "embedded-dil", "--seeds", "0", "--engine", "ray", "--quiet", "--out", "{tmp}/out", "--address", "headnode"], "--address must be HOST:PORT", None),
    ("publish-trainable-malformed", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "params.trainable must be a list", leaderboard_with(result("r", lambda d: d["params"].update(trainable={"a": 1}), method="beta"))),
    # ------------------------------------------------------------------ publish
    *[(f"publish-{key}", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], message, leaderboard_with(result("r", edit, method="beta"))) for key, (edit, message) in NAME_EDITS.items()],
    ("publish-partial", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "a partial run cannot be published", result("r", as_partial)),
    ("publish-tampered", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "the file was edited or is corrupt", leaderboard_with(result("r", lambda d: d["metrics"].__setitem__("last", 1.0)))),
    ("publish-duplicate", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "is already in", leaderboard_with(result("r", method="alpha"))),
    ("publish-stream-version", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "cannot share a table with version 1", leaderboard_with(result("r", lambda d: rehash(d["scenario"].update(version="2") or d), method="beta"))),
    ("publish-reported-broken", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "reported.json: not valid JSON", leaderboard_with(result("r", method="beta"), reported="[{")),
    ("publish-reported-shape", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "entry 0: 'source' must be a string", leaderboard_with(result("r", method="beta"), reported=json.dumps([{"method": "m", "scenario": "s", "backbone": "b", "metrics": {}}]))),
    ("publish-reported-nan", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "metric 'last' must be a finite number", leaderboard_with(result("r", method="beta"), reported='[{"method": "m", "scenario": "s", "backbone": "b", "source": "x", "metrics": {"last": NaN}}]')),
    ("publish-onto-file", ["publish", "{in}/r.json", "--leaderboard", "{in}/file"], "is not a folder", lambda folder: (result("r")(folder), text_file("file", "x")(folder))),
    ("publish-parent-missing", ["publish", "{in}/r.json", "--leaderboard", "{in}/a/b/lb"], "its parent folder does not exist", result("r")),
    ("publish-missing-file", ["publish", "{in}/none.json", "--leaderboard", "{in}/lb"], "none.json' not found", None),
    ("publish-nothing-nowhere", ["publish", "--leaderboard", "{in}/lb"], "does not exist: nothing to regenerate", None),
    ("publish-remove-unknown", ["publish", "--remove", "s_alpha_b_seed0_00000000", "--leaderboard", "{in}/lb"], "no result with this run id is published in", leaderboard_with()),
    ("publish-remove-and-unknown", ["publish", "--remove", _published_run_id(), "--remove", "nope", "--leaderboard", "{in}/lb"], "--remove 'nope': no result with this run id", leaderboard_with()),
    ("publish-remove-no-board", ["publish", "--remove", "x", "--leaderboard", "{in}/lb"], "holds no published results", None),
    ("publish-reported-ours", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "'cl_bench_method' must be a string", leaderboard_with(result("r", method="beta"), reported=json.dumps([{"method": "m", "scenario": "s", "backbone": "b", "source": "x", "cl_bench_method": 5, "metrics": {}}]))),
    ("publish-verified-broken", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "verified.json: not valid JSON", leaderboard_with(result("r", method="beta"), text_file("lb/verified.json", "{"))),
    ("publish-verified-shape", ["publish", "{in}/r.json", "--leaderboard", "{in}/lb"], "verified.json: row 0 must hold", leaderboard_with(result("r", method="beta"), text_file("lb/verified.json", json.dumps({"schema": "cl_bench.verified/1", "rows": [{"run_id": 1}]})))),
    ("validate-outcome-flipped", ["validate", "{in}/r.json"], "but its per-example outcomes give", result("r", lambda d: d["outcomes"]["acc"][1].__setitem__(0, "AAAA"), examples=20)),
    ("validate-outcomes-missing", ["validate", "{in}/r.json"], "required field 'outcomes' is missing", result("r", lambda d: d.pop("outcomes"))),
    # ------------------------------------------------------------------ verify
    ("verify-no-board", ["verify", "{in}/nowhere"], "holds no published results to verify", None),
    ("verify-empty-board", ["verify", "{in}/empty"], "holds no published results to verify", text_file("empty/header.md", "# x")),
    ("verify-sample-zero", ["verify", "{in}/lb", "--sample", "0"], "--sample must be at least 1, got 0", leaderboard_with()),
    ("verify-sample-word", ["verify", "{in}/lb", "--sample", "all"], "argument --sample: invalid int value: 'all'", leaderboard_with()),
    ("verify-config-missing", ["verify", "{in}/lb"], "is missing: regenerate the pages with clbench publish first", leaderboard_with(lambda folder: [p.unlink() for p in (folder / "lb" / "configs").glob("*.json")])),
    # ------------------------------------------------------------------ sweep
    ("sweep-unknown-method", ["sweep", "--methods", "seq-lora,mooram", "--scenarios", "embedded-dil", "--out", "{tmp}/out"], "unknown method 'mooram'", None),
    ("sweep-unknown-scenario", ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dl", "--out", "{tmp}/out"], "did you mean 'embedded-dil'", None),
    ("sweep-no-methods", ["sweep", "--methods", " , ", "--scenarios", "embedded-dil", "--out", "{tmp}/out"], "--methods needs at least one name", None),
    ("sweep-seeds-words", ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "a,b", "--out", "{tmp}/out"], "--seeds expects comma-separated integers", None),
    ("sweep-seed-range", ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--seeds", "0,-3", "--out", "{tmp}/out"], "seq-lora on embedded-dil, seed -3: seed must be between 0", None),
    ("sweep-jobs-zero", ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--jobs", "0", "--out", "{tmp}/out"], "--jobs must be at least 1", None),
    ("sweep-bad-setting", ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--set", "method.rank=0", "--out", "{tmp}/out"], "unknown method parameter 'rank'", None),
    ("sweep-shared-setting-hint", ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--set", "method.rank=4", "--out", "{tmp}/out"], "to set a parameter for one method's runs only, use --set <method>.<param>=VALUE", None),
    ("sweep-method-setting-not-swept", ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--set", "moram.rank=4", "--out", "{tmp}/out"], "--set moram.rank=4: 'moram' is not among --methods (zeroshot, seq-lora)", None),
    ("sweep-method-setting-bad", ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--set", "seq-lora.rank=0", "--out", "{tmp}/out"], "seq-lora on embedded-dil, seed 0: method 'seq-lora': LoRA rank must be at least 1", None),
    ("sweep-method-setting-unknown", ["sweep", "--methods", "zeroshot,seq-lora", "--scenarios", "embedded-dil", "--set", "seq-lora.rnak=2", "--out", "{tmp}/out"], "unknown method parameter 'rnak'; did you mean 'rank'?", None),
    ("sweep-lr-nan", ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--set", "method.lr=nan", "--out", "{tmp}/out"], "seq-lora on embedded-dil, seed 0: method.lr must be a finite number", None),
    ("sweep-out-dev-null", ["sweep", "--methods", "seq-lora", "--scenarios", "embedded-dil", "--out", "/dev/null"], "--out /dev/null is not a folder", None),
]


@pytest.fixture
def no_training(monkeypatch):
    """Training before the error is a failure of the case: the error must come first."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("trained before the error was found")

    monkeypatch.setattr(ClStrategy, "train", refuse)


@pytest.mark.parametrize(("argv", "message", "prepare"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, monkeypatch, capsys, no_training, argv, message, prepare):
    inputs = tmp_path / "in"
    inputs.mkdir()
    if prepare:
        prepare(inputs)
    argv = [a.replace("{in}", str(inputs)).replace("{tmp}", str(tmp_path)) for a in argv]
    expect_one_line_error(tmp_path, monkeypatch, capsys, argv, message)


def test_the_campaign_holds_at_least_60_distinct_cases():
    assert len({case[0] for case in CASES}) == len(CASES) >= 60
    assert len({json.dumps(case[1]) + case[2] for case in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A seq-lora run (1 iteration per task) stopped after its first task: its checkpoint and partial result."""
    from unittest import mock

    from cl_bench import RunConfig, run

    folder = tmp_path_factory.mktemp("interrupted")
    original, calls = ClStrategy.train, {"n": 0}

    def stop_at_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with mock.patch.object(ClStrategy, "train", stop_at_second), pytest.raises(KeyboardInterrupt):
        run(RunConfig(method="seq-lora", iters=1, out=str(folder), progress=False))
    assert len(list(folder.glob("*.ckpt"))) == 1
    return folder


def rewrite(edit: Callable[[dict], None], recompute: bool = True) -> Callable[[Path], None]:
    """Edit a checkpoint's manifest; with `recompute`, its sha256 is made to match again (a careful forger)."""

    def tamper(path: Path) -> None:
        from cl_bench.running import checkpoint

        manifest = json.loads(path.read_text())
        edit(manifest)
        if recompute:
            manifest["sha256"] = checkpoint.digest(manifest)
        path.write_text(json.dumps(manifest))

    return tamper


def progress_edit(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda manifest: edit(manifest["progress"])


def tensors_file(path: Path) -> Path:
    (found,) = path.parent.glob(f"{path.name}.*.safetensors")
    return found


def flip_tensor_bytes(path: Path) -> None:
    """Random bytes inside the largest stored tensor of the safetensors file, its header intact."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tensors_file(path)), "pt") as stored:
        tensors = {name: stored.get_tensor(name) for name in stored.keys()}  # noqa: SIM118 (safe_open is no dict)
    name = max(tensors, key=lambda k: tensors[k].numel())
    tensors[name].view(-1)[:64] = torch.rand(64)
    save_file(tensors, str(tensors_file(path)))  # the manifest's sha256s are the old ones


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def first_referenced(manifest: dict) -> str:
    return next(name for name, entry in manifest["tensors"].items() if entry["in"] == "reference")


def other_sha256(manifest: dict) -> None:
    """The run's manifest as if the backbone it was trained from had other weights than this run builds."""
    manifest["tensors"][first_referenced(manifest)]["sha256"] = "0" * 64


def old_format(path: Path) -> None:
    """What cl_bench.checkpoint/2 wrote: one torch.save file (never opened now: it may pickle)."""
    torch.save({"format": "cl_bench.checkpoint/2", "identity": "{}", "next_task": 1}, path)


CHECKPOINT_CASES = [
    ("tensor-bytes", flip_tensor_bytes, "fails its sha256 check (model/"),
    ("tensors-file-truncated", lambda p: truncate(tensors_file(p)), "cannot be read (its tensors file"),
    ("tensors-file-missing", lambda p: tensors_file(p).unlink(), "cannot be read (its tensors file"),
    ("tensors-file-elsewhere", rewrite(lambda s: s.update(tensors_file="../elsewhere.safetensors")), "names its tensors file '../elsewhere.safetensors'"),
    ("progress-edited-digest-kept", rewrite(progress_edit(lambda p: p["acc"][1].__setitem__(0, 99.0)), recompute=False), "fails its sha256 check"),
    ("missing-acc", rewrite(progress_edit(lambda p: p.pop("acc"))), "progress 'acc' must hold 2 rows"),
    ("next-task-99", rewrite(lambda s: s.update(next_task=99)), "next_task is 99, not a task between 1 and 2"),
    ("next-task-negative", rewrite(lambda s: s.update(next_task=-1)), "next_task is -1"),
    ("next-task-true", rewrite(lambda s: s.update(next_task=True)), "next_task is True"),
    ("accuracy-150", rewrite(progress_edit(lambda p: p["acc"][1].__setitem__(0, 150.0))), "rows must hold 3 accuracies in [0, 100]"),
    ("control-row-short", rewrite(progress_edit(lambda p: p["control"][0].clear())), "progress 'control' rows must hold 1 accuracies"),
    ("elapsed-negative", rewrite(progress_edit(lambda p: p.update(elapsed=-5))), "progress 'elapsed' must be a number of seconds"),
    ("progress-not-object", rewrite(lambda s: s.update(progress="{")), "its progress is not an object"),
    ("model-missing-tensor", rewrite(lambda s: s["tensors"].pop(first_referenced(s))), "does not fit this run (it neither stores nor references clip."),
    ("referenced-tensor-differs", rewrite(other_sha256), "is not the one the checkpoint references"),
    ("tensor-entry-malformed", rewrite(lambda s: s["tensors"][first_referenced(s)].update(dtype="pickle")), "its tensor list is malformed"),
    ("method-state-untagged", rewrite(lambda s: s.update(method={"a": 1, "b": 2})), "its method or strategy state holds an untagged value"),
    ("truncated", truncate, "cannot be read"),
    ("not-json", lambda p: p.write_bytes(b"\x80not json"), "cannot be read (UnicodeDecodeError)"),
    ("old-format", old_format, "is not a cl_bench.checkpoint/3 checkpoint (an older cl_bench wrote it with torch.save)"),
    ("format-2", rewrite(lambda s: s.update(format="cl_bench.checkpoint/2")), "is not a cl_bench.checkpoint/3 checkpoint (format 'cl_bench.checkpoint/2')"),
    ("other-configuration", rewrite(lambda s: s.update(identity={})), "was written by a run with another configuration"),
]


@pytest.mark.parametrize(("tamper", "message"), [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_tampered_checkpoint_is_refused_on_resume(tmp_path, monkeypatch, capsys, no_training, interrupted, tamper, message):
    out = tmp_path / "out"
    shutil.copytree(interrupted, out)
    tamper(next(out.glob("*.ckpt")))
    argv = ["run", "--method", "seq-lora", "--iters", "1", "--out", str(out), "--resume", "--quiet"]
    expect_one_line_error(tmp_path, monkeypatch, capsys, argv, message)


# ---------------------------------------------------------------------------------- plugins


class Plugin:
    """A plugin object holding one method spec, registered beside the installed ones."""

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec

    @hookimpl
    def cl_bench_methods(self):
        return [self.spec]


def with_plugin(monkeypatch, spec: MethodSpec) -> None:
    from cl_bench import cli
    from cl_bench.config.registry import Registry

    monkeypatch.setattr(cli, "_registry", lambda: Registry([Plugin(spec)]))


class NotAMethod:
    setup = 3


def raises_value_error(hparams):
    raise ValueError("window must be odd")


PLUGIN_CASES = [
    ("factory-returns-none", MethodSpec(name="nothing", factory=lambda hp: None, summary=""), "its factory returned None, not a method object"),
    ("hook-not-callable", MethodSpec(name="broken", factory=lambda hp: NotAMethod(), summary=""), "its 'setup' is int, not a callable"),
    ("factory-value-error", MethodSpec(name="picky", factory=raises_value_error, summary=""), "method 'picky': window must be odd"),
    ("bad-default-type", MethodSpec(name="typed", factory=lambda hp: None, summary="", defaults={"window": 3}), "method.window expects an integer"),
]


@pytest.mark.parametrize(("spec", "message"), [c[1:] for c in PLUGIN_CASES], ids=[c[0] for c in PLUGIN_CASES])
def test_a_misbehaving_method_plugin_is_a_one_line_error(tmp_path, monkeypatch, capsys, no_training, spec, message):
    with_plugin(monkeypatch, spec)
    argv = ["run", "--method", spec.name, "--quiet", "--out", str(tmp_path / "out"), "--set", "method.window=wide"] if spec.defaults else ["run", "--method", spec.name, "--quiet", "--out", str(tmp_path / "out")]
    expect_one_line_error(tmp_path, monkeypatch, capsys, argv, message)


@pytest.mark.parametrize("name", ["../../escape", "has space", 7, None, "", "x" * 65])
def test_a_spec_with_an_unsafe_name_is_reported_and_the_rest_still_load(monkeypatch, capsys, name):
    with_plugin(monkeypatch, MethodSpec(name=name, factory=lambda hp: None, summary=""))
    assert main(["ls"]) == 0
    captured = capsys.readouterr()
    assert "seq-lora" in captured.out
    assert "plugins that failed to load:" in captured.out and f"method name {name!r}"[:40] in captured.out



def test_a_full_disk_is_one_line_naming_the_folder_and_nothing_is_left(tmp_path, monkeypatch, capsys):
    """On a 1 MiB file system the first checkpoint does not fit (finetune trains, hence stores, all 14 MB of tiny-clip)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        argv = ["run", "--method", "finetune", "--iters", "1", "--quiet", "--out", str(disk / "runs")]
        expect_one_line_error(tmp_path, monkeypatch, capsys, argv, f"no space left on the device of {disk / 'runs'} while writing")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_second_process_on_one_configuration_is_refused(tmp_path, monkeypatch, capsys, no_training):
    from cl_bench import RunConfig, locks
    from cl_bench.config.registry import Registry
    from cl_bench.running.runner import check

    out = tmp_path / "out"
    out.mkdir()
    result_path = check(RunConfig(method="seq-lora", iters=1, out=str(out)), Registry())
    with locks.held(out / f".{result_path.stem}.lock"):  # as a running process holds it
        argv = ["run", "--method", "seq-lora", "--iters", "1", "--quiet", "--out", str(out)]
        expect_one_line_error(tmp_path, monkeypatch, capsys, argv, f"another clbench process is running this configuration into {out}")


class InterruptsInItsHook:
    @hookimpl
    def cl_bench_methods(self):
        raise KeyboardInterrupt


class ExitsInItsHook:
    @hookimpl
    def cl_bench_scenarios(self):
        raise SystemExit(3)


def test_a_plugin_hook_that_exits_or_interrupts_is_reported_and_the_rest_load(monkeypatch, capsys):
    from cl_bench import cli
    from cl_bench.config.registry import Registry

    monkeypatch.setattr(cli, "_registry", lambda: Registry([InterruptsInItsHook(), ExitsInItsHook()]))
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "cl_bench_methods() failed (KeyboardInterrupt)" in out and "cl_bench_scenarios() failed (called sys.exit(3))" in out
    assert "seq-lora" in out and "embedded-mtil" in out
