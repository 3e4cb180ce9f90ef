"""Tables (pandas + tabulate). `render_table` is the one function that turns a frame into text.

A stream's table shows, per row (a method variant over its seeds), the mean of each metric with
its 95% interval and the best row of each column marked together with every row statistically
tied with it (`intervals`: docs/metrics.md, Intervals and ties)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cl_bench import escape
from cl_bench.results.metrics import INSTRUCT_METRICS, METRICS
from cl_bench.results.schema import run_settings

FORMATS = {"md": "github", "latex": "latex_booktabs", "latex_raw": "latex_raw", "text": "simple", "html": "html", "unsafehtml": "unsafehtml", "csv": "csv"}


def render_table(frame, fmt: str = "text", floatfmt: str = ".2f") -> str:
    """Render a pandas DataFrame as text, Markdown, LaTeX, HTML or CSV."""
    if fmt == "csv":
        return frame.to_csv()
    from tabulate import tabulate

    return tabulate(frame, headers="keys", tablefmt=FORMATS[fmt], floatfmt=floatfmt, missingval="-")


def matrix_frame(result: Mapping[str, Any], fmt: str = "text"):
    """The accuracy matrix with named rows (after which task) and columns (which test set).

    Task and control-set names come from the result file, escaped for `fmt` (a report format, or
    "plot" for matplotlib).
    """
    import pandas as pd

    scenario = result["scenario"]
    text = escape.plot_text if fmt == "plot" else escape.for_format(fmt)
    tasks = [text(t) for t in scenario["task_order"]]
    controls = [f"{text(c['name'])} (control)" for c in scenario.get("control_sets", [])]
    rows = ["zero-shot", *(f"after {t}" for t in tasks)][: len(result["acc_matrix"])]
    data = [list(a) + list(c) for a, c in zip(result["acc_matrix"], result["control_matrix"])]
    scorers, control_scorers = scorer_names(scenario)
    if scorers:  # text streams: each column is scored its own way
        tasks = [f"{t} ({text(s)})" for t, s in zip(tasks, scorers)]
        controls = [f"{c[: -len(' (control)')]} (control, {text(s)})" for c, s in zip(controls, control_scorers)]
    return pd.DataFrame(data, index=pd.Index(rows, name="score %" if scorers else "accuracy %"), columns=[*tasks, *controls])


def scorer_names(scenario: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The scorer of each task and control set of a text stream (empty lists for image streams)."""
    scorers, controls = scenario.get("scorers"), scenario.get("control_scorers")
    tasks = len(scenario.get("task_order", []))
    if not isinstance(scorers, list) or len(scorers) != tasks or not all(isinstance(s, str) for s in scorers):
        return [], []
    if not isinstance(controls, list) or len(controls) != len(scenario.get("control_sets", [])) or not all(isinstance(s, str) for s in controls):
        controls = ["?"] * len(scenario.get("control_sets", []))
    return scorers, controls


def metrics_frame(result: Mapping[str, Any]):
    import pandas as pd

    values = result.get("metrics") or {}
    names = [*METRICS, *(m for m in INSTRUCT_METRICS if m in values)]
    return pd.DataFrame({"value": [values.get(m) for m in names]}, index=pd.Index(names, name="metric"))


def format_run(result: Mapping[str, Any], fmt: str = "text") -> str:
    """What `clbench run` prints: a header, the accuracy matrix and the metrics."""
    timings = result.get("timings", {})
    text = escape.for_format(fmt)
    header = (
        f"{text(result['scenario']['name'])} | {text(result['method']['name'])} | {text(result['backbone']['name'])} | "
        f"seed {result['seed']} | {text(result['status'])} | {timings.get('total', 0):.1f} s"
    )
    parts = [header, "", render_table(matrix_frame(result, fmt), fmt)]
    if result.get("metrics"):
        parts += ["", render_table(metrics_frame(result), fmt, floatfmt=".3f")]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------- many runs

SUMMARY_METRICS = ("last", "avg", "transfer", "plasticity", "bwt", "forgetting", "zs_retention")
# What a text (instruct) stream's table shows by default: TRACE's OP and BWT first, then each
# task's final score, named with its scorer.
INSTRUCT_SUMMARY = ("op", "trace_bwt", "bwt", "plasticity", "forgetting", "zs_retention")
REPORT_FORMATS = ("text", "md", "latex", "html", "csv")


def collect(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every valid result file under `paths` (files, or folders searched recursively).

    An invalid file stops with a one-line error naming it; a run that appears twice (same run id)
    counts once, the newer file.
    """
    from cl_bench.errors import UserError
    from cl_bench.results.validation import load_valid, result_files

    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(result_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"'{given}' is neither a result file nor a folder")
    newest: dict[str, dict[str, Any]] = {}
    for file in files:
        data = load_valid(file).data
        held = newest.get(data["run_id"])
        if held is None or data["created"] > held["created"]:
            newest[data["run_id"]] = data
    if not newest:
        raise UserError(f"no result files under {', '.join(str(p) for p in paths)}")
    return list(newest.values())


def variant_labels(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Row labels: the method name, plus backbone and hyper-parameters where runs of one method differ.

    Computed over the runs given, which `summary_frames` and the leaderboard give one stream's table
    at a time: a label names only what differs within its table. The leaderboard labels its plots
    and files the same way.
    """
    import json

    def identity(data):
        config = {k: v for k, v in run_settings(data).items() if k != "seed"}
        return json.dumps(config, sort_keys=True, default=str)

    by_method: dict[str, set[str]] = {}
    for data in results:
        by_method.setdefault(data["method"]["name"], set()).add(identity(data))
    labels = []
    for data in results:
        name = data["method"]["name"]
        if len(by_method[name]) == 1:
            labels.append(name)
            continue
        others = [d for d in results if d["method"]["name"] == name and identity(d) != identity(data)]
        mine = {**data["method"]["hyperparameters"], "backbone": data["backbone"]["name"]}
        differ = sorted(k for k, v in mine.items() if any({**d["method"]["hyperparameters"], "backbone": d["backbone"]["name"]}.get(k) != v for d in others))
        labels.append(f"{name} ({', '.join(f'{k}={mine[k]}' for k in differ)})" if differ else name)
    return labels


def budget(data: Mapping[str, Any]) -> str:
    """A run's training budget: iterations per task x batch size ("0" for a method that trains nothing)."""
    experiences = data["timings"].get("experiences") or []
    iters = [e["iters"] for e in experiences if isinstance(e, dict) and isinstance(e.get("iters"), int)]
    hyper = data["method"].get("hyperparameters") or {}
    per_task = max(iters) if iters else hyper.get("iters")
    batch = hyper.get("batch_size")
    if per_task == 0:
        return "0"
    if not isinstance(per_task, int) or isinstance(per_task, bool) or not isinstance(batch, int) or isinstance(batch, bool):
        return "-"
    return f"{per_task} × {batch}"


def summary_frames(results: list[dict[str, Any]], metrics: Sequence[str] = SUMMARY_METRICS, *, resamples: int | None = None) -> dict[str, Any]:
    """One frame per scenario (name, version): a row per method variant, mean and std over seeds.

    Columns: `seeds`, then `<metric>`, `<metric>_std` (ddof=1; NaN for one seed), `<metric>_low`
    and `<metric>_high` (the 95% interval; NaN where there is none), `<metric>_tied` (the best row
    or statistically tied with it), `trainable` (parameters trained per task, mean over tasks),
    `budget` (iterations per task x batch size) and `train_s` (training seconds per run). A text
    stream's table shows `INSTRUCT_SUMMARY` unless other metrics are asked for, then each task's
    final score as "<task> (<scorer>)". Row labels name what differs between a method's variants
    within the table. `table.attrs["metrics"]` lists a table's columns and `table.attrs["stats"]`
    holds its `intervals.TableStats`. Only complete runs count.
    """
    import pandas as pd

    from cl_bench.publish.intervals import RESAMPLES, table_stats

    complete = [d for d in results if d["status"] == "complete"]
    if not complete:
        from cl_bench.errors import UserError

        raise UserError(f"no complete result among {len(results)} file(s): a partial run has no metrics yet; finish it with `clbench run ... --resume`")
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for data in complete:
        by_scenario.setdefault(scenario_label(data["scenario"]), []).append(data)
    labelled = [(data, label) for part in by_scenario.values() for data, label in zip(part, variant_labels(part))]
    records: list[dict[str, Any]] = []
    columns: dict[Any, Any] = {}
    specs: dict[str, dict[str, tuple[str, int]]] = {}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for data, label in labelled:
        scenario = data["scenario"]
        key = scenario_label(scenario)
        scorers, _ = scorer_names(scenario)
        chosen = list(INSTRUCT_SUMMARY if scorers and tuple(metrics) == SUMMARY_METRICS else metrics)
        finals = {f"{t} ({s})": v for t, s, v in zip(scenario["task_order"], scorers, data["acc_matrix"][-1])}
        columns.setdefault(key, [*chosen, *finals])
        specs.setdefault(key, {**{m: ("metric", 0) for m in chosen}, **{name: ("final", j) for j, name in enumerate(finals)}})
        runs.setdefault(key, {}).setdefault(label, []).append(data)
        trainable = data["params"].get("trainable") or [0]
        records.append(
            {
                "scenario": key,
                "method": label,
                "seed": data["seed"],
                **{m: data["metrics"].get(m) for m in chosen},
                **finals,
                "trainable": sum(trainable) / len(trainable),
                "budget": budget(data),
                "train_s": sum(e.get("train", 0.0) for e in data["timings"].get("experiences", [])),
            }
        )
    frame = pd.DataFrame.from_records(records)
    tables = {}
    for scenario, part in frame.groupby("scenario", sort=True):
        shown = columns[scenario]
        grouped = part.groupby("method", sort=True)
        values = grouped[shown].mean()
        stds = grouped[shown].std(ddof=1).add_suffix("_std")
        budgets = grouped["budget"].agg(lambda found: " / ".join(sorted(set(found))))
        stats = table_stats(runs[str(scenario)], specs[str(scenario)], resamples=resamples or RESAMPLES)
        bounds = {}
        for metric in shown:
            found = stats.estimates.get(metric, {})
            bounds[f"{metric}_low"] = [_number(found[row].low) if row in found else math.nan for row in values.index]
            bounds[f"{metric}_high"] = [_number(found[row].high) if row in found else math.nan for row in values.index]
            bounds[f"{metric}_tied"] = [row in stats.tied.get(metric, set()) for row in values.index]
        table = pd.concat(
            [grouped["seed"].nunique().rename("seeds"), values, stds, pd.DataFrame(bounds, index=values.index), grouped[["trainable"]].mean(), budgets, grouped[["train_s"]].mean()],
            axis=1,
        )
        table.attrs["metrics"] = shown
        table.attrs["stats"] = stats
        tables[scenario] = table
    return tables


def _number(value: float | None) -> float:
    return math.nan if value is None else value


def scenario_label(scenario: Mapping[str, Any]) -> str:
    """A stream's name, version, protocol and parameters: runs under different labels never share a table."""
    params = "".join(f", {k}={v}" for k, v in sorted((scenario.get("params") or {}).items()))
    return f"{scenario['name']} (v{scenario.get('version', '?')}, {scenario['protocol']}{params})"


def best_rows(table, metric: str) -> set[str]:
    """The rows marked in `metric`'s column: the best mean (largest; smallest for forgetting) and
    every row statistically tied with it (`intervals.TableStats.tied`)."""
    from cl_bench.results.metrics import LOWER_IS_BETTER

    if f"{metric}_tied" in table:
        return set(table.index[table[f"{metric}_tied"].astype(bool)])
    values = table[metric].dropna()
    if values.empty:
        return set()
    best = values.min() if metric in LOWER_IS_BETTER else values.max()
    return set(values.index[values == best])


def _cell(mean, half, digits: int, fmt: str, best: bool) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    plus = {"latex": r" $\pm$ ", "html": " &plusmn; "}.get(fmt, " ± ")
    text = f"{mean:.{digits}f}" + ("" if half is None or math.isnan(half) else f"{plus}{half:.{digits}f}")
    if best:
        text = {"md": f"**{text}**", "latex": rf"\textbf{{{text}}}", "html": f"<b>{text}</b>"}.get(fmt, f"{text} *")
    return text


def _half(table, row: str, metric: str) -> float:
    """Half the width of the row's 95% interval (the interval is symmetric); NaN where there is none."""
    low, high = table.at[row, f"{metric}_low"], table.at[row, f"{metric}_high"]
    return (high - low) / 2 if f"{metric}_low" in table and not (math.isnan(low) or math.isnan(high)) else math.nan


def display_frame(table, metrics: Sequence[str], fmt: str):
    """A table of strings: mean ± half the 95% interval per metric, the best of each column and the
    rows statistically tied with it marked."""
    import pandas as pd

    out = pd.DataFrame(index=table.index)
    out["seeds"] = table["seeds"].astype(int)
    for metric in table.attrs.get("metrics", metrics):
        digits = 3 if metric == "zs_retention" else 2
        winners = best_rows(table, metric)
        out[metric] = [_cell(table.at[row, metric], _half(table, row, metric), digits, fmt, row in winners) for row in table.index]
    out["trainable"] = [f"{int(round(v)):,}" for v in table["trainable"]]
    out["budget"] = list(table["budget"]) if "budget" in table else "-"
    out["train s"] = [f"{v:.1f}" for v in table["train_s"]]
    text = escape.for_format(fmt)
    out.index = [text(label) for label in out.index]  # labels hold names and values from result files
    if fmt == "latex":  # latex_raw writes headers as they are
        out.columns = [text(column) for column in out.columns]
    else:  # a text stream's task columns hold task and scorer names from result files
        fixed = {*METRICS, *INSTRUCT_METRICS, "seeds", "trainable", "budget", "train s"}
        out.columns = [column if column in fixed else text(column) for column in out.columns]
    out.index.name = "method"
    return out


def differences_frame(table, metrics: Sequence[str], fmt: str):
    """A table of strings: per column, each row's paired difference with the best row (row minus
    best) ± half its 95% interval; "best" for the best row, "-" where there is none."""
    import pandas as pd

    stats = table.attrs["stats"]
    out = pd.DataFrame(index=table.index)
    plus = {"latex": r" $\pm$ ", "html": " &plusmn; "}.get(fmt, " ± ")
    for metric in table.attrs.get("metrics", metrics):
        digits = 3 if metric == "zs_retention" else 2
        cells = []
        for row in table.index:
            found = stats.versus_best.get(metric, {}).get(row)
            if stats.best.get(metric) == row:
                cells.append("best")
            elif found is None:
                cells.append("-")
            else:
                half = found.half_width
                cells.append(f"{found.value:+.{digits}f}" + ("" if half is None else f"{plus}{half:.{digits}f}"))
        out[metric] = cells
    text = escape.for_format(fmt)
    out.index = [text(label) for label in out.index]
    fixed = {*METRICS, *INSTRUCT_METRICS}
    out.columns = [text(column) if fmt == "latex" or column not in fixed else column for column in out.columns]
    out.index.name = "method"
    return out


def table_notes(table, fmt: str = "text", reference: str | None = None) -> list[str]:
    """What a table's marks mean: where its intervals come from and the smallest difference its
    seeds can detect, and, given the `reference` row (the untouched model), how far the best row
    is above it and how the rows spread against the seed noise (each note one line of plain text,
    escaped for `fmt`)."""
    from cl_bench.publish.intervals import BASIS_EXAMPLES

    stats = table.attrs.get("stats")
    if stats is None:
        return []
    text = escape.for_format(fmt)
    counts = sorted(set(table["seeds"].astype(int)))
    if stats.basis == BASIS_EXAMPLES:
        basis = "over seeds and test examples (a bootstrap over each test set's examples, the seeds by Student's t)"
    else:
        basis = f"over seeds only: {stats.why_seeds_only}, so the test sets' own sampling is not counted"
    mark = "bold" if fmt in ("md", "latex", "html") else "marked *"
    notes = [
        f"Each cell: the mean over seeds ± half its 95% interval, {basis}. {mark.capitalize()}: the best of each column and every row "
        "statistically tied with it (the 95% interval of its paired difference with the best holds 0). A row of one seed without "
        "per-example outcomes has no interval."
    ]
    detectable = [f"{metric} {value:.{3 if metric == 'zs_retention' else 2}f}" for metric, value in stats.detectable.items() if value is not None and metric in table.attrs["metrics"]]
    if detectable:
        seeds = f"{counts[0]} seed{'s' if counts[0] != 1 else ''}" if len(counts) == 1 else "these seeds"
        notes.append(f"Smallest difference with the best that {seeds} can detect (5% level, 80% power; the median over the rows): {', '.join(detectable)}.")
    headroom = headroom_note(table, reference)
    if headroom:
        notes.append(headroom)
    return [text(note) for note in notes]


def headroom_note(table, reference: str | None) -> str | None:
    """How well the table's stream separates methods, on its first metric (`last`, or `op` for
    text): the best row against the `reference` row (the untouched model), and the spread of the
    rows' means (max - min) against the seed noise (the largest standard deviation over seeds of
    any row: the median would count the rows that do not vary with the seed, such as the untouched
    model, as no noise). None without the reference row in the table or a best row."""
    stats = table.attrs.get("stats")
    metric = table.attrs["metrics"][0]
    if stats is None or reference is None or reference not in table.index or metric not in stats.best:
        return None
    best = stats.best[metric]
    # The paired difference (on the seeds both rows share) where there is one, as the table of
    # differences shows it; else the difference of the means.
    versus = stats.versus_best.get(metric, {}).get(reference) if best != reference else None
    gap = -versus.value if versus is not None else float(table.at[best, metric] - table.at[reference, metric])
    half = versus.half_width if versus is not None else None
    interval = f" ± {half:.2f}" if half is not None else ""
    means = table[metric].astype(float)
    noise = table[f"{metric}_std"].astype(float).dropna()
    spread = float(means.max() - means.min())
    sentence = (
        f"Headroom on {metric}: the best row ({best}, {table.at[best, metric]:.2f}) is {gap:.2f}{interval} points above the untouched model "
        f"({reference}, {table.at[reference, metric]:.2f}); the rows' means span {spread:.2f} points (max − min)"
    )
    if noise.empty:
        return sentence + "; no row has two seeds, so there is no seed noise to set it against."
    noisiest = str(noise.idxmax())
    largest = float(noise[noisiest])
    relation = "larger than" if spread > largest else "not larger than"
    return sentence + f", {relation} the seed noise of {largest:.2f} (the largest standard deviation over seeds, {noisiest}'s)."


def render_report(results: list[dict[str, Any]], fmt: str = "text", metrics: Sequence[str] = SUMMARY_METRICS, *, differences: bool = False, reference: str | None = None) -> str:
    """Every scenario's table in one format; `html` is a self-contained page."""
    from cl_bench.errors import UserError

    if fmt not in REPORT_FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(REPORT_FORMATS)}")
    unknown = [m for m in metrics if m not in (*METRICS, *INSTRUCT_METRICS)]
    if unknown:
        from cl_bench.errors import unknown_name

        raise unknown_name("metric", unknown[0], [*METRICS, *INSTRUCT_METRICS])
    tables = render_tables(results, fmt, metrics, differences=differences, reference=reference)
    if not tables:
        raise UserError("no complete runs among the result files (partial runs are not reported)")
    if fmt == "html":
        from markupsafe import Markup

        from cl_bench.publish.templating import render

        # Cells were escaped when display_frame built them; the template escapes the titles.
        return render("report.html.j2", title="cl_bench results", tables={scenario: Markup(shown) for scenario, shown in tables.items()})
    parts = []
    text = escape.for_format(fmt)
    for scenario, shown in tables.items():
        title = {"md": f"### {text(scenario)}", "latex": f"% {text(scenario)}", "csv": ""}.get(fmt, text(scenario))
        parts.append(f"{title}\n\n{shown}" if title else shown)
    return "\n\n".join(parts)


def render_tables(results: list[dict[str, Any]], fmt: str = "text", metrics: Sequence[str] = SUMMARY_METRICS, *, differences: bool = False, reference: str | None = None) -> dict[str, str]:
    """One rendered table per stream label (see `summary_frames`), without titles, followed by its
    notes (with a `reference` row, the headroom over it: `headroom_note`) and, with `differences`,
    the table of paired differences with the best."""
    rendered = {}
    raw = {"latex": "latex_raw", "html": "unsafehtml"}.get(fmt, fmt)
    frames = summary_frames(results, metrics)
    rows = sorted({str(row) for table in frames.values() for row in table.index})
    if reference is not None and reference not in rows:
        from cl_bench.errors import unknown_name

        raise unknown_name("row for --reference", reference, rows)
    for scenario, table in frames.items():
        if fmt == "csv":
            rendered[scenario] = table.assign(scenario=scenario).to_csv()
            continue
        parts = [render_table(display_frame(table, metrics, fmt), raw)]
        if differences:
            title = "Paired differences with the best of each column (row minus best, ± half the 95% interval):"
            parts.append({"latex": f"% {title}", "html": f"<p>{title}</p>"}.get(fmt, title))
            parts.append(render_table(differences_frame(table, metrics, fmt), raw))
        notes = table_notes(table, fmt, reference)
        parts += {"latex": [f"% {note}" for note in notes], "html": [f"<p>{note}</p>" for note in notes]}.get(fmt, notes)
        rendered[scenario] = "\n\n".join(parts)
    return rendered


# ---------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "cl_bench"  # stable element ids: regenerated SVGs differ only when numbers do

    return plt


MAX_FIGURE_INCHES = 30.0
MAX_WRITTEN_COLUMNS = 24


def plot_matrix(result: Mapping[str, Any], path: Path) -> Path:
    """A heat map of one run's accuracy matrix, control sets included, with every value written in."""
    import numpy as np

    plt = _pyplot()
    frame = matrix_frame(result, "plot")
    # The figure grows with the matrix up to a cap (a 100-task file stays a few megapixels), and the
    # values are written into the cells only while they stay legible.
    figure, axes = plt.subplots(figsize=(min(1.2 + 1.1 * frame.shape[1], MAX_FIGURE_INCHES), min(0.9 + 0.5 * frame.shape[0], MAX_FIGURE_INCHES)))
    image = axes.imshow(frame.to_numpy(), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    axes.set_xticks(range(frame.shape[1]), frame.columns, rotation=30, ha="right")
    axes.set_yticks(range(frame.shape[0]), frame.index)
    for (i, j), value in np.ndenumerate(frame.to_numpy() if frame.shape[1] <= MAX_WRITTEN_COLUMNS else np.empty((0, 0))):
        axes.text(j, i, f"{value:.1f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    seed = result["seed"] if isinstance(result["seed"], str) else f"seed {result['seed']}"
    axes.set_title(escape.plot_text(f"{result['method']['name']} on {result['scenario']['name']}, {seed}"), fontsize=10)
    figure.colorbar(image, ax=axes, label="accuracy %")
    figure.tight_layout()
    return _save(figure, path)


def plot_accuracy_over_tasks(results: Sequence[Mapping[str, Any]], path: Path, labels: list[str] | None = None) -> Path:
    """Accuracy after each task, one line per method (mean over seeds): under class-IL over the test
    images of the tasks seen so far (the curve `avg` averages), otherwise the mean over every task."""
    import numpy as np

    from cl_bench.results.metrics import POOLED_PROTOCOLS, seen_accuracy

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    labels = labels or variant_labels(list(results))
    tasks = results[0]["scenario"]["task_order"]
    pooled = results[0]["scenario"]["protocol"] in POOLED_PROTOCOLS

    def curve(data: Mapping[str, Any]) -> np.ndarray:
        acc = np.asarray(data["acc_matrix"], dtype=float)
        if pooled:  # class-IL: the test images of the classes seen so far (nothing is seen before task 1)
            return np.concatenate([[np.nan], seen_accuracy(acc, np.asarray(data["scenario"]["test_sizes"], dtype=float))])
        return acc.mean(axis=1)

    for label in sorted(set(labels)):
        curves = np.array([curve(d) for d, lab in zip(results, labels) if lab == label])
        axes.plot(range(len(tasks) + 1), curves.mean(axis=0), marker="o", label=escape.plot_text(f"{label} (n={len(curves)})"))
    axes.set_xticks(range(len(tasks) + 1), ["zero-shot", *(f"after {escape.plot_text(t)}" for t in tasks)], rotation=20)
    text_stream = bool(scorer_names(results[0]["scenario"])[0])
    axes.set_ylabel("accuracy on the tasks seen so far %" if pooled else "mean score over all tasks %" if text_stream else "mean accuracy over all tasks %")
    axes.set_title(escape.plot_text(scenario_label(results[0]["scenario"])), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    from cl_bench.files import write_atomic

    plt = _pyplot()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format=path.suffix.lstrip("."), dpi=110, metadata={"Date": None} if path.suffix == ".svg" else None))
    plt.close(figure)
    return path


def write_plots(results: list[dict[str, Any]], folder: str | Path, suffix: str = ".png") -> list[Path]:
    """Heat maps per complete run (<run id>.png) and accuracy over tasks per scenario (<scenario>.png)."""
    from cl_bench.paths import MAX_SEGMENT, path_inside, safe_slug

    folder = Path(folder)
    complete = [d for d in results if d["status"] == "complete"]
    for data in complete:  # every name is checked before the first plot is written
        safe_slug(data["run_id"], "run_id", MAX_SEGMENT)
        safe_slug(data["scenario"]["name"], "scenario name")
    written = [plot_matrix(d, path_inside(folder, f"{d['run_id']}{suffix}", what="run_id")) for d in complete]
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for data in complete:
        by_scenario.setdefault(scenario_label(data["scenario"]), []).append(data)
    for index, (_label, part) in enumerate(sorted(by_scenario.items())):
        name = part[0]["scenario"]["name"] if sum(1 for k in by_scenario if k.startswith(part[0]["scenario"]["name"] + " ")) == 1 else f"{part[0]['scenario']['name']}-{index}"
        written.append(plot_accuracy_over_tasks(part, path_inside(folder, f"{name}_accuracy{suffix}", what="scenario name")))
    return written
