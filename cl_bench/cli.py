"""The `clbench` command. Heavy libraries load only inside `run`, so `--help` and `ls` stay fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cl_bench import __version__
from cl_bench.errors import UserError, clip, one_line, shown

EXAMPLES = """examples:
  clbench ls
  clbench run                                    # embedded default, prints the results table
  clbench run --method seq-lora --scenario embedded-cil --seed 1 --iters 50
  clbench run --set method.rank=4 --set scenario.tasks=2 --out runs/
  clbench run --backbone clip-vit-b16 --pretrained ~/weights/open_clip_model.safetensors
  clbench validate runs/*.json
"""


def _registry():
    from cl_bench.config.registry import Registry

    registry = Registry()
    for error in registry.errors:
        print(f"clbench: warning: {error}", file=sys.stderr)
    return registry


def _scenario_settings(items: Sequence[str], specs) -> dict[str, str]:
    """`ls --set scenario.X=VALUE` items as {X: VALUE}; X must be a parameter of some scenario."""
    from cl_bench.errors import shown, unknown_name

    given = {}
    for item in items:
        key, sep, value = item.partition("=")
        head, _, param = key.strip().partition(".")
        if not sep or head != "scenario" or not param:
            raise UserError(f"ls --set takes scenario.X=VALUE (a stream parameter), got {shown(item)}")
        given[param] = value
    known = {key for spec in specs for key in spec.defaults}
    for param in given:
        if param not in known:
            raise unknown_name("scenario parameter", param, known, hint="(no listed scenario has it)")
    return given


def _task_column(spec, given: dict[str, str]) -> tuple[str, str | None]:
    """The scenario's task count under the --set values it has, or 'invalid' and why."""
    try:
        params = spec.resolve({key: value for key, value in given.items() if key in spec.defaults})
    except UserError as exc:
        return "invalid", str(exc)
    return f"{spec.task_count(params)} tasks", None


def cmd_ls(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from cl_bench.config.run_config import data_root_or_env

    registry = _registry()
    methods = [(name, reg.spec.version, reg.plugin, reg.spec.summary) for name, reg in registry.all("method").items()]
    given = _scenario_settings(args.set or [], [reg.spec for reg in registry.all("scenario").values()])
    scenarios = []
    for name, reg in registry.all("scenario").items():
        spec = reg.spec
        problem = spec.check_data(data_root_or_env(args.data_root)) if spec.check_data else None
        # A value one scenario refuses marks its row: the others may take it (tasks=4 splits 100 classes, not 10).
        tasks, refused = _task_column(spec, given)
        scenarios.append((name, spec.protocol, tasks, "data: present" if not problem else "data: MISSING", refused or spec.summary))
    backbones = []
    for name, reg in registry.all("backbone").items():
        spec = reg.spec
        backbones.append((name, spec.kind, _weights_state(spec), spec.summary))
    loggers = [(name, reg.spec.missing_packages() or "installed", reg.spec.summary) for name, reg in registry.all("logger").items()]
    for title, rows in (("methods", methods), ("scenarios", scenarios), ("backbones", backbones), ("loggers (--log)", loggers)):
        print(f"{title}:")
        print(tabulate(rows, tablefmt="plain") if rows else "  (none)")
        print()
    if registry.errors:
        print("plugins that failed to load:")
        for error in registry.errors:
            print(f"  {error}")
    return 0


def _weights_state(spec) -> str:
    """Whether a backbone finds its weights at its default parameters (nothing is loaded or hashed)."""
    if spec.weights_file is None:
        return "weights: none needed"
    try:
        spec.weights_file(dict(spec.defaults))
    except UserError:
        return "weights: missing"
    return "weights: present"


def build_config(args: argparse.Namespace):
    from cl_bench.config.loading import load_config_file
    from cl_bench.config.run_config import RunConfig

    config = RunConfig.from_dict(load_config_file(args.config), source=args.config) if args.config else RunConfig()
    for flag in ("method", "scenario", "backbone", "seed", "iters", "batch_size", "device", "precision", "data_root", "pretrained", "out", "threads", "log", "nproc", "shard_weights"):
        value = getattr(args, flag)
        if value is not None:
            config.set(flag, value, source=f"--{flag.replace('_', '-')}")
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {shown(item)}")
        config.set(key.strip(), value, source=f"--set {clip(item, 80)}")
    config.resume = args.resume
    config.progress = not args.quiet
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from cl_bench.sweep.local import die_with_sweep

    die_with_sweep()
    config = build_config(args)
    from cl_bench.publish.report import format_run
    from cl_bench.running.runner import run

    result = run(config, registry=_registry())
    print(format_run(result.data, args.format))
    print(f"\nresult: {result.path}")
    if args.config:
        from cl_bench.config.loading import repeated_run_id

        repeated = repeated_run_id(args.config)
        if repeated and repeated != result.run_id:
            print(
                f"clbench: note: {args.config} was run {repeated}; its settings now resolve to {result.run_id} "
                "(cl_bench or a plugin changed since, or a flag overrode a setting): this was a new run, not a repeat",
                file=sys.stderr,
            )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cl_bench.results.validation import load_valid, result_files

    paths: list[str | Path] = []
    for given in args.files:  # a folder stands for the result files under it, as for report and publish
        found = result_files(Path(given)) if Path(given).is_dir() else [given]
        if not found:
            raise UserError(f"no result files under {given}")
        paths.extend(found)
    for path in paths:
        result = load_valid(path)
        tasks = len(result.data["scenario"]["task_order"])
        outcomes = result.data.get("outcomes")
        checked = ""
        if outcomes is not None:
            cells = [cell for key in ("acc", "control") for row in outcomes[key] for cell in row]
            checked = f", {sum(cell is not None for cell in cells)} of {len(cells)} cells recomputed from their per-example outcomes"
        print(f"{path}: valid ({result.data['schema']}, {result.status}, {tasks} tasks, metrics recomputed{checked})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cl_bench.publish.report import SUMMARY_METRICS, collect, render_report, write_plots

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else list(SUMMARY_METRICS)
    if args.plot:
        from cl_bench.paths import check_writable_folder

        check_writable_folder(args.plot, "--plot")
    results = collect(args.paths)
    text = render_report(results, args.format, metrics, differences=args.differences, reference=args.reference)
    if args.plot:
        written = write_plots(results, args.plot)
        print(f"clbench: wrote {len(written)} plots to {args.plot}", file=sys.stderr)
    print(text)
    return 0


def _names(text: str, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"{flag} needs at least one name")
    return names


def cmd_sweep(args: argparse.Namespace) -> int:
    from cl_bench.publish.report import render_report
    from cl_bench.results.validation import load_valid
    from cl_bench.sweep.local import execute, plan_grid, split_settings

    try:
        seeds = [int(s) for s in _names(args.seeds, "--seeds")]
    except ValueError:
        raise UserError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    _check_engine_flags(args)
    methods, registry = _names(args.methods, "--methods"), _registry()
    args.set, per_method = split_settings(args.set or [], methods, registry.all("method"))
    args.method = args.scenario = args.seed = args.config = None
    base = build_config(args)
    grid = plan_grid(base, methods, _names(args.scenarios, "--scenarios"), seeds, registry, per_method)
    for method, settings in per_method.items():
        runs = sum(1 for p in grid if p.config.method == method)
        shown_settings = ", ".join(f"{key}={value}" for key, value in settings)
        print(f"sweep: {method}'s settings {shown_settings} apply to its {runs} run(s)", file=sys.stderr)
    ray_options = {"address": args.address, "cpus_per_run": 1.0 if args.cpus_per_run is None else args.cpus_per_run, "gpus_per_run": args.gpus_per_run or 0.0}
    slurm_options = _slurm_options(args)
    ran, skipped, failed = execute(grid, jobs=args.jobs, force=args.force, progress=not args.quiet, engine=args.engine, ray_options=ray_options, slurm_options=slurm_options)
    if slurm_options is not None and not slurm_options.wait:
        print(f"sweep: {len(grid)} runs: {len(skipped)} already complete, {len(grid) - len(skipped)} submitted; rerun this command when they end (it skips complete runs and reports)", file=sys.stderr)
        return 0
    print(f"sweep: {len(grid)} runs: {len(ran)} ran, {len(skipped)} already complete, {len(failed)} failed", file=sys.stderr)
    for planned, log in failed:
        print(f"sweep: failed: {planned.name} (log: {log})", file=sys.stderr)
    finished = [load_valid(p.result_path).data for p in grid if p not in [f for f, _ in failed]]
    if finished:
        print(render_report(finished, args.format))
    return 1 if failed else 0


# The flags that belong to one engine (given with another, they would be silently ignored).
_ENGINE_FLAGS = {
    "ray": ("address",),
    "slurm": ("partition", "account", "time", "mem", "array_parallelism", "sbatch", "no_wait", "slurm_config"),
}


def _check_engine_flags(args: argparse.Namespace) -> None:
    for engine, flags in _ENGINE_FLAGS.items():
        for flag in flags:
            if args.engine != engine and getattr(args, flag) not in (None, False, []):
                raise UserError(f"--{flag.replace('_', '-')} is an option of --engine {engine}, not of --engine {args.engine}")
    if args.engine == "local" and (args.cpus_per_run is not None or args.gpus_per_run is not None):
        raise UserError("--cpus-per-run and --gpus-per-run are options of --engine ray and slurm; the local engine shares this machine's cores (--jobs, --threads)")


def _slurm_options(args: argparse.Namespace):
    if args.engine != "slurm":
        return None
    from cl_bench.sweep.slurm_engine import SlurmOptions

    return SlurmOptions(
        partition=args.partition,
        account=args.account,
        time=args.time,
        cpus=args.cpus_per_run,
        gpus=args.gpus_per_run,
        mem=args.mem,
        array_parallelism=args.array_parallelism,
        sbatch=args.sbatch or [],
        wait=not args.no_wait,
        config=args.slurm_config,
    )


def cmd_publish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cl_bench.publish.leaderboard import publish
    from cl_bench.results.validation import result_files

    files = []
    for given in args.results:
        path = Path(given)
        files.extend(result_files(path) if path.is_dir() else [path])
    copies, removed = publish(files, args.leaderboard, remove=args.remove or [])
    if not args.results and not args.remove:
        print(f"regenerated README.md, index.html, plots/ and configs/ of {args.leaderboard} from the results it holds")
        return 0
    retracted = f", removed {len(removed)}" if args.remove else ""
    print(f"published {len(copies)} result(s) to {args.leaderboard}{retracted}; regenerated README.md, index.html, plots/ and configs/")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from cl_bench.publish.verify import FAILING, verify

    found = verify(args.leaderboard, sample=args.sample, seed=args.seed, scratch=args.scratch, registry=_registry(), progress=True)
    rows = [(one_line(v.stream), one_line(v.label), v.seed, f"{v.largest_cell_difference:.3g}", "same" if v.same_machine_kind else "other", v.verdict) for v in found]
    print(tabulate(rows, headers=["stream", "row", "seed", "largest cell difference", "machine kind", "verdict"], tablefmt="simple"))
    print(f"recorded in {args.leaderboard}/verified.json; regenerated README.md and index.html")
    return 1 if any(v.verdict in FAILING for v in found) else 0


def add_run_settings(parser: argparse.ArgumentParser, every: str, threads: str) -> None:
    """The settings of a run that `run` and `sweep` share (`every`: how sweep's help says it)."""
    parser.add_argument("--backbone", help=f"backbone name{every} (default tiny-clip)")
    parser.add_argument("--iters", help=f"optimiser steps per experience{every} (method.iters)")
    parser.add_argument("--batch-size", dest="batch_size", help=f"training batch size{every} (method.batch_size)")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--threads", help=threads)
    parser.add_argument("--nproc", help=f"processes training {'each' if every else 'the'} run data-parallel (default 1; on CUDA one device each; docs/multi-process.md)")
    parser.add_argument(
        "--shard-weights", dest="shard_weights", action="store_true", default=None,
        help=f"with --nproc: shard {'each' if every else 'the'} language model's weights, gradients and optimizer state over the processes while it trains (FSDP; docs/multi-process.md)",
    )  # fmt: skip
    parser.add_argument("--precision", help="auto (default: bf16/fp16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16")
    parser.add_argument("--data-root", dest="data_root", help="root folder of real data sets (or CL_BENCH_DATA)")
    parser.add_argument("--pretrained", help="backbone weights file (backbone.pretrained)")
    parser.add_argument("--log", help=f"experiment trackers{every}, comma-separated: wandb, mlflow ('clbench ls' lists them)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"a setting{every}: method.X, scenario.X, backbone.X or a run field; repeatable")


class _Parser(argparse.ArgumentParser):
    """argparse with cl_bench's one-line errors (and the usual exit code 2)."""

    def error(self, message: str):
        from cl_bench.errors import clip

        self.exit(2, f"clbench: error: {clip(message, 300)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clbench",
        description="cl_bench: continual learning of CLIP-like models, with methods as plugins.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cl_bench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = commands.add_parser("ls", help="list methods, scenarios (protocol, tasks, data) and backbones")
    ls.add_argument("--data-root", help="where real data sets live, to report whether they are present (or CL_BENCH_DATA)")
    ls.add_argument("--set", action="append", metavar="scenario.X=VALUE", help="count each scenario's tasks with this parameter value (a row it is invalid for says why); repeatable")
    ls.set_defaults(handler=cmd_ls)

    run = commands.add_parser("run", help="run one method on one stream and write a result file", formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--method", help="method name (default moram)")
    run.add_argument("--scenario", help="stream name (default embedded-mtil)")
    run.add_argument("--seed", help="training seed (default 0); it never changes the task or class order")
    add_run_settings(run, every="", threads="CPU threads (default: half the usable cores; more threads than free cores run far slower)")
    run.add_argument("--out", help="folder for the result file and checkpoints (default runs)")
    run.add_argument("--config", help="TOML, YAML or JSON file of settings (a result file repeats its run)")
    run.add_argument("--resume", action="store_true", help="continue from this configuration's checkpoint in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--format", choices=("text", "md"), default="text", help="table format of the printed results")
    run.set_defaults(handler=cmd_run)

    report = commands.add_parser("report", help="tables of means over seeds with 95%% intervals per stream and method, from result files")
    report.add_argument("paths", nargs="+", metavar="PATH", help="result files or folders (searched recursively)")
    report.add_argument("--format", choices=("text", "md", "latex", "html", "csv"), default="text", help="table format (html: a self-contained page)")
    report.add_argument("--metrics", help="comma-separated metrics (default last,avg,transfer,plasticity,bwt,forgetting,zs_retention)")
    report.add_argument("--differences", action="store_true", help="also print each stream's paired differences with the best row of each column, with 95%% intervals")
    report.add_argument(
        "--reference", metavar="ROW", help="the row of the untouched model (e.g. zeroshot): each table then says how far its best row is above it and how the rows spread against the seed noise"
    )
    report.add_argument("--plot", metavar="DIR", help="also write PNG plots: a heat map per run, accuracy over tasks per stream")
    report.set_defaults(handler=cmd_report)

    sweep = commands.add_parser("sweep", help="run a grid of methods x scenarios x seeds as local processes, Ray tasks or Slurm jobs, then report")
    sweep.add_argument("--methods", required=True, help="comma-separated method names")
    sweep.add_argument("--scenarios", required=True, help="comma-separated stream names")
    sweep.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at once (each gets an equal share of the CPU threads)")
    sweep.add_argument("--force", action="store_true", help="redo runs whose complete result exists")
    add_run_settings(sweep, every=" for every run", threads="CPU threads per run (default: half the usable cores with --jobs 1, else the cores divided by --jobs)")
    sweep.add_argument("--out", help="folder for result files, checkpoints and logs/ (default runs)")
    sweep.add_argument(
        "--engine", choices=("local", "ray", "slurm"), default="local", help="local child processes (default), Ray tasks (pip install -e '.[ray]') or Slurm job arrays (pip install -e '.[slurm]')"
    )
    sweep.add_argument("--address", help="with --engine ray: a running cluster's address (ray start --head); default: start Ray here")
    sweep.add_argument("--cpus-per-run", dest="cpus_per_run", type=float, help="with --engine ray or slurm: CPUs per run (also its threads; default 1, by backbone under slurm)")
    sweep.add_argument("--gpus-per-run", dest="gpus_per_run", type=float, help="with --engine ray or slurm: GPUs per run (default 0 under ray, by backbone under slurm)")
    sweep.add_argument("--partition", help="with --engine slurm: the partition(s) to submit to (default: the cluster's)")
    sweep.add_argument("--account", help="with --engine slurm: the account to charge (default: yours)")
    sweep.add_argument("--time", help="with --engine slurm: time limit per run, minutes or D-HH:MM:SS (default by backbone); a run out of time is requeued and resumes")
    sweep.add_argument("--mem", help="with --engine slurm: memory per run, e.g. 16G (default by backbone)")
    sweep.add_argument("--array-parallelism", dest="array_parallelism", type=int, help="with --engine slurm: at most this many runs of an array at once (default: no limit)")
    sweep.add_argument("--sbatch", action="append", metavar="KEY[=VALUE]", help="with --engine slurm: another sbatch option, e.g. constraint=a100, qos=high, exclusive; repeatable")
    sweep.add_argument("--slurm-config", dest="slurm_config", metavar="FILE", help="with --engine slurm: a TOML, YAML or JSON file whose slurm section sets these options (the command line wins)")
    sweep.add_argument("--no-wait", dest="no_wait", action="store_true", help="with --engine slurm: submit, print the job ids and return (rerun the sweep later for the report)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.add_argument("--format", choices=("text", "md"), default="text", help="format of the final table")
    sweep.set_defaults(handler=cmd_sweep, resume=False)

    publish = commands.add_parser("publish", help="check result files and add them to a leaderboard folder (or --remove published ones), regenerating its tables and plots")
    publish.add_argument("results", nargs="*", metavar="RESULT", help="result files or folders of them (none, and no --remove: regenerate the pages only)")
    publish.add_argument("--leaderboard", default="leaderboard", help="leaderboard folder (default leaderboard)")
    publish.add_argument("--remove", action="append", metavar="RUN_ID", help="retract the published result with this run id (repeatable; with RESULTs, in the same step)")
    publish.set_defaults(handler=cmd_publish)

    verify = commands.add_parser("verify", help="re-run a sample of a leaderboard's rows from their configurations and compare with the published numbers")
    verify.add_argument("leaderboard", metavar="LEADERBOARD", help="leaderboard folder")
    verify.add_argument("--sample", type=int, default=1, help="rows to re-run, one seed each (default 1)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the draw of rows and seeds (default 0)")
    verify.add_argument("--scratch", metavar="DIR", help="keep the re-runs' result files in DIR (default: a temporary folder, removed afterwards)")
    verify.set_defaults(handler=cmd_verify)

    validate = commands.add_parser("validate", help="check result files: schema, shapes, and that the metrics recompute")
    validate.add_argument("files", nargs="+", metavar="PATH", help="result files, or folders of them")
    validate.set_defaults(handler=cmd_validate)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is: it unwinds as Ctrl-C does (locks released, temporary
    files removed, the last checkpoint kept)."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import signal
    import threading

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return _handle(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _handle(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"clbench: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`clbench ls | head -3`): end quietly, as other tools do
        _silence_stdout()
        return 141
    except OSError as exc:  # the file system said no (a full disk, a permission): not a bug of ours
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"clbench: error: {one_line(exc.strerror or str(exc))}{where}; free space or fix the permissions and rerun", file=sys.stderr)
        return 2
    except Terminated:
        print("clbench: terminated (SIGTERM; the last finished experience is checkpointed: rerun with --resume)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("clbench: interrupted (the last finished experience is checkpointed: rerun with --resume)", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's final flush raises no second error."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test's capture): nothing to flush there
        pass


if __name__ == "__main__":
    sys.exit(main())
