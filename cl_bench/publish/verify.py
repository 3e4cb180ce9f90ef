"""`clbench verify`: re-run a sample of a leaderboard's rows from their configurations and say
whether the published numbers come back (docs/leaderboard.md, Verifying rows).

A row is a method variant of one stream's table; verify draws `sample` rows (a seeded draw), and
for each one of its seeds, re-runs `configs/<row>.json` with that seed, the published run's thread
count and evaluation batch size into a scratch folder, and compares the matrices cell by cell:

- on the same machine kind (the published result's `hardware.cpu` and device equal this one's) a
  run repeats bit for bit, so the verdict is `exact` or `differs`;
- elsewhere floating-point order moves the last digits and training amplifies them, so each
  summary metric of the re-run must lie within half the row's 95% interval of the published
  seed's value: `within the interval` or `outside the interval`.

The record (`verified.json`: per published run id, when, the verdict and the largest cell
difference) is merged into the leaderboard all or nothing (the same lock, stage and atomic swap as
`publish`), and the pages are regenerated so that their header says when rows were last verified.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError
from cl_bench.files import write_json
from cl_bench.publish import leaderboard
from cl_bench.publish.pages import VERIFIED, plan_streams, published, read_verified, regenerate
from cl_bench.publish.report import SUMMARY_METRICS, summary_frames

SCHEMA = "cl_bench.verified/1"
FAILING = ("differs", "outside the interval")


@dataclass
class Verification:
    run_id: str  # the published result re-run
    stream: str
    label: str
    seed: int
    verified: str
    verdict: str  # exact | differs | within the interval | outside the interval | no interval
    largest_cell_difference: float
    same_machine_kind: bool
    published_cpu: str | None
    cpu: str | None
    rerun_run_id: str
    metrics_outside: list[str]


def machine_kind(data: dict[str, Any]) -> tuple[Any, Any]:
    hardware = data.get("hardware") or {}
    return hardware.get("cpu"), hardware.get("device")


def largest_difference(first: dict[str, Any], second: dict[str, Any]) -> float:
    """The largest absolute difference between two results' cells (accuracy and control matrices)."""
    pairs = [(a, b) for key in ("acc_matrix", "control_matrix") for row_a, row_b in zip(first[key], second[key]) for a, b in zip(row_a, row_b)]
    return max((abs(a - b) for a, b in pairs), default=0.0)


def verify(folder: str | Path, *, sample: int = 1, seed: int = 0, scratch: str | Path | None = None, registry=None, progress: bool = False) -> list[Verification]:
    """Re-run `sample` rows of the leaderboard in `folder` (see the module); returns their verdicts.

    `progress`: say on stderr which row re-runs and, once it ends, its verdict (a re-run takes
    seconds to minutes)."""
    from cl_bench.config.run_config import RunConfig
    from cl_bench.results.schema import run_settings
    from cl_bench.running.runner import run

    if sample < 1:
        raise UserError(f"--sample must be at least 1, got {sample}")
    folder = Path(folder).resolve()
    results = [d for _, d in published(folder)] if folder.is_dir() else []
    if not results:
        raise UserError(f"{folder} holds no published results to verify")
    pages = plan_streams(results)
    rows = [(page, variant) for page in pages for variant in page.variants]
    draw = random.Random(seed)
    chosen = [(page, variant, draw.choice(variant.runs)) for page, variant in draw.sample(rows, min(sample, len(rows)))]
    for _, variant, _ in chosen:
        if not (folder / "configs" / variant.config).is_file():
            raise UserError(f"{folder / 'configs' / variant.config} is missing: regenerate the pages with clbench publish first")
    tables = summary_frames(results, SUMMARY_METRICS)
    own_scratch = scratch is None
    base = Path(tempfile.mkdtemp(prefix="clbench-verify-")) if scratch is None else Path(scratch)
    found = []
    try:
        for number, (page, variant, published_run) in enumerate(chosen, 1):
            if progress:
                print(f"verify: {number}/{len(chosen)}: re-running {variant.label} on {page.label}, seed {published_run['seed']}", file=sys.stderr, flush=True)
            path = folder / "configs" / variant.config
            config = RunConfig.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))
            settings = run_settings(published_run)
            config.set("seed", published_run["seed"], source="the published result")
            for key in ("eval_batch_size", "threads"):
                if isinstance(settings.get(key), int):
                    config.set(key, settings[key], source="the published result")
            config.out, config.progress, config.resume = str(base / f"{variant.stem}-seed{published_run['seed']}"), False, False
            rerun = run(config, registry=registry).data
            found.append(judge(published_run, rerun, page.label, variant.label, tables[page.label]))
            if progress:
                print(f"verify: {number}/{len(chosen)}: {found[-1].verdict} (largest cell difference {found[-1].largest_cell_difference:.3g})", file=sys.stderr, flush=True)
    finally:
        if own_scratch:
            shutil.rmtree(base, ignore_errors=True)
    record(folder, found)
    return found


def judge(published_run: dict[str, Any], rerun: dict[str, Any], stream: str, label: str, table) -> Verification:
    """The verdict on one re-run (see the module)."""
    difference = largest_difference(published_run, rerun)
    same = machine_kind(published_run) == machine_kind(rerun)
    outside: list[str] = []
    if same:
        verdict = "exact" if difference == 0.0 else "differs"
    else:
        estimates = table.attrs["stats"].estimates
        halves = {m: estimates.get(m, {}).get(label) for m in SUMMARY_METRICS}
        if not any(e is not None and e.half_width is not None for e in halves.values()):
            verdict = "no interval"
        else:
            for metric, estimate in halves.items():
                mine, theirs = rerun["metrics"].get(metric), published_run["metrics"].get(metric)
                if estimate is None or estimate.half_width is None or mine is None or theirs is None:
                    continue
                if abs(mine - theirs) > estimate.half_width:
                    outside.append(metric)
            verdict = "outside the interval" if outside else "within the interval"
    return Verification(
        run_id=published_run["run_id"],
        stream=published_run["scenario"]["name"],
        label=label,
        seed=published_run["seed"],
        verified=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        verdict=verdict,
        largest_cell_difference=difference,
        same_machine_kind=same,
        published_cpu=machine_kind(published_run)[0],
        cpu=machine_kind(rerun)[0],
        rerun_run_id=rerun["run_id"],
        metrics_outside=outside,
    )


def record(folder: Path, found: list[Verification]) -> None:
    """Merge `found` into the leaderboard's verified.json and regenerate its pages, all or nothing."""
    with leaderboard._locked(folder):
        current = {d["run_id"] for _, d in published(folder)}  # a result retracted meanwhile is not recorded
        rows = {row["run_id"]: row for row in read_verified(folder) if row["run_id"] in current}
        rows.update({v.run_id: asdict(v) for v in found if v.run_id in current})
        with leaderboard._staged(folder) as stage:
            write_json(stage / VERIFIED, {"schema": SCHEMA, "rows": sorted(rows.values(), key=lambda r: (r["stream"], r["label"], r["seed"]))})
            regenerate(stage)
            leaderboard._swap_in(stage, folder)
