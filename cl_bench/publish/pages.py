"""A leaderboard folder's generated pages: README.md, index.html, plots/*.svg and configs/*.json.

Per stream (name, version, protocol, parameters) both pages show our table, the papers' numbers
for that protocol from `reported.json`, the accuracy-over-tasks curve and, per method variant, its
mean accuracy matrix and run configuration. index.html is one self-contained file: the tables are
plain HTML (they read without JavaScript); a small inline script adds sortable columns and a
protocol / backbone filter. Both pages are rendered from templates in `cl_bench/templates/`
(leaderboard.md.j2, leaderboard.html.j2, leaderboard.js; see `templating`). Every name from a
result file becomes a path only through `safe_slug`, and every text is escaped for the page it
lands in.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from cl_bench import escape
from cl_bench.errors import UserError, clip, shown
from cl_bench.files import write_atomic, write_json
from cl_bench.paths import MAX_SEGMENT, path_inside, safe_slug
from cl_bench.publish.proxy import proxy_ranks
from cl_bench.publish.report import (
    SUMMARY_METRICS,
    differences_frame,
    display_frame,
    plot_accuracy_over_tasks,
    plot_matrix,
    render_table,
    scenario_label,
    summary_frames,
    table_notes,
    variant_labels,
)
from cl_bench.publish.templating import MarkdownText, package_text, render
from cl_bench.results.metrics import POOLED_PROTOCOLS
from cl_bench.results.schema import run_settings
from cl_bench.results.validation import load_valid, result_files

REPORTED_TITLE = "Reported by the papers"
REPORTED_CAVEAT = "not our runs: the backbones named, on the real data sets, so never compare them directly with the tiny models' numbers"


@dataclass
class Variant:
    """One row of a stream's table: a method with one set of settings, over its seeds."""

    label: str
    runs: list[dict[str, Any]]
    stem: str  # names its files: plots/<stem>.svg (mean matrix), configs/<stem>.json

    @property
    def plot(self) -> str:
        return f"{self.stem}.svg"

    @property
    def config(self) -> str:
        return f"{self.stem}.json"

    @property
    def backbone(self) -> str:
        return self.runs[0]["backbone"]["name"]


@dataclass
class StreamPage:
    label: str
    protocol: str
    curve: str
    variants: list[Variant] = field(default_factory=list)


def published(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The leaderboard's result files, each loaded and validated."""
    results = folder / "results"
    return [(path, load_valid(path).data) for path in result_files(results)] if results.is_dir() else []


def result_location(data: dict[str, Any]) -> Path:
    """Where a result lives inside a leaderboard folder: results/<scenario>/<method>/<run id>.json."""
    scenario, method = safe_slug(data["scenario"]["name"], "scenario name"), safe_slug(data["method"]["name"], "method name")
    safe_slug(data["backbone"]["name"], "backbone name")
    return Path("results", scenario, method, safe_slug(f"{data['run_id']}.json", "run_id", MAX_SEGMENT))


def mean_result(runs: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """A result-shaped document holding the mean matrices of several seeds, for one heat map."""
    import numpy as np

    first = runs[0]
    return {
        **first,
        "method": {**first["method"], "name": label},
        "seed": f"mean of {len(runs)}",
        "acc_matrix": np.mean([d["acc_matrix"] for d in runs], axis=0).tolist(),
        "control_matrix": np.mean([d["control_matrix"] for d in runs], axis=0).tolist(),
    }


def run_config(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What `clbench run --config` needs to repeat a row (its first seed): the config without where it ran."""
    from cl_bench.config.run_config import RunConfig

    first = min(runs, key=lambda d: d["seed"])
    return {k: v for k, v in run_settings(first).items() if k not in RunConfig.EXECUTION_FIELDS}


def plan_streams(results: list[dict[str, Any]]) -> list[StreamPage]:
    """Per stream (sorted by label): its rows, each named as its files will be, labelled as the
    tables label rows (by what differs within the table)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for data in results:
        grouped.setdefault(scenario_label(data["scenario"]), []).append(data)
    pages = []
    for index, (label, part) in enumerate(sorted(grouped.items())):
        labels = variant_labels(part)
        stem = f"{index:02d}-{safe_slug(part[0]['scenario']['name'], 'scenario name')}"
        page = StreamPage(label, part[0]["scenario"]["protocol"], f"{stem}-accuracy.svg")
        counts: dict[str, int] = {}
        for variant_label in sorted(set(labels)):
            runs = sorted((d for d, lab in zip(part, labels) if lab == variant_label), key=lambda d: d["seed"])
            method = safe_slug(runs[0]["method"]["name"], "method name")
            counts[method] = counts.get(method, 0) + 1  # variants of one method: -2, -3, ... after the first
            name = f"{stem}-{method}" if counts[method] == 1 else f"{stem}-{method}-{counts[method]}"
            page.variants.append(Variant(variant_label, runs, name))
        pages.append(page)
    return pages


def write_stream_files(results: list[dict[str, Any]], folder: Path) -> list[StreamPage]:
    """Per stream: the curve and each variant's mean matrix (plots/), each variant's config (configs/)."""
    pages = plan_streams(results)
    for page in pages:
        runs = [d for variant in page.variants for d in variant.runs]
        labels = [variant.label for variant in page.variants for _ in variant.runs]
        plot_accuracy_over_tasks(runs, path_inside(folder / "plots", page.curve), labels)
        for variant in page.variants:
            plot_matrix(mean_result(variant.runs, variant.label), path_inside(folder / "plots", variant.plot))
            write_json(path_inside(folder / "configs", variant.config), run_config(variant.runs))
    return pages


# ---------------------------------------------------------------------------------- reported.json

REPORTED_FIELDS = ("method", "scenario", "backbone", "source")
VERIFIED = "verified.json"  # written by `clbench verify` (cl_bench.publish.verify), read here


def read_reported(folder: Path) -> list[dict[str, Any]]:
    """The entries of `reported.json` (none without the file), each checked; a bad one is a one-line error."""
    path = folder / "reported.json"
    if not path.is_file():
        return []
    expected = "a list of {method, scenario, backbone, source: strings; protocol, cl_bench_method, note: optional strings; metrics: {name: number}} entries"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda name: math.nan)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: not valid JSON ({clip(str(exc))}); it must hold {expected}") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: it must hold {expected}")
    for number, entry in enumerate(entries):
        where = f"{path}: entry {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
            raise UserError(f"{where} must be an object with a 'metrics' object ({expected})")
        for key in REPORTED_FIELDS:
            if not isinstance(entry.get(key), str):
                raise UserError(f"{where}: '{key}' must be a string")
        if not isinstance(entry.get("protocol", ""), str):
            raise UserError(f"{where}: 'protocol' must be a string (class-il, domain-il, mtil or x-tail)")
        if not isinstance(entry.get("cl_bench_method", ""), str):
            raise UserError(f"{where}: 'cl_bench_method' must be a string (the name of our method that the entry reports)")
        if not isinstance(entry.get("note", ""), str):
            raise UserError(f"{where}: 'note' must be a string (a caveat about the numbers, shown beside them)")
        for name, value in entry["metrics"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > 1e6:
                raise UserError(f"{where}: metric {shown(name)} must be a finite number, not {shown(value)}")
    return entries


def reported_table(entries: list[dict[str, Any]], fmt: str) -> str:
    """The papers' own numbers as a Markdown or HTML table (text from the file escaped)."""
    import pandas as pd

    if not entries:
        return ""
    text = escape.markdown if fmt == "md" else str  # tabulate's html format escapes by itself
    noted = any(e.get("note") for e in entries)  # the note column only where some entry has one
    rows = [
        {
            "method": text(e["method"]),
            "stream": text(e["scenario"]),
            "backbone": text(e["backbone"]),
            **{text(k): v for k, v in e["metrics"].items()},
            "source": text(e["source"]),
            **({"ours": text(e["cl_bench_method"])} if "cl_bench_method" in e else {}),
            **({"note": text(e.get("note", ""))} if noted else {}),
        }
        for e in entries
    ]
    frame = pd.DataFrame(rows).set_index("method")
    return render_table(frame, "md" if fmt == "md" else "html", floatfmt=".1f")


def protocol_note(protocol: str, fmt: str) -> str:
    """How `last` and `avg` read on a stream of this protocol, as Markdown ("md": `MarkdownText`) or HTML ("html": `Markup`)."""
    if protocol in POOLED_PROTOCOLS:
        body = (
            "{last} and {avg} pool the test images of the classes seen so far ({avg} is the average incremental accuracy); "
            "the per-task means are {last_task_mean} and {avg_all_cells} in each result file."
        )
    else:
        body = "{last} and {avg} are means over tasks with equal weight (MTIL's Last and Average)."
    names = ("last", "avg", "last_task_mean", "avg_all_cells")
    if fmt == "md":
        return MarkdownText(f"Protocol {escape.markdown(protocol)}: " + body.format(**{n: f"`{n}`" for n in names}))
    return Markup("Protocol {}: ").format(protocol) + Markup(body).format(**{n: Markup("<code>{}</code>").format(n) for n in names})


# ---------------------------------------------------------------------------------- the two pages


def regenerate(folder: str | Path) -> None:
    """Rewrite README.md, index.html, plots/ and configs/ from the published results."""
    folder = Path(folder)
    results = [d for _, d in published(folder)]
    reported = read_reported(folder)  # a broken file is refused before anything is written
    for generated, pattern in (("plots", "*.svg"), ("configs", "*.json")):
        for old in (folder / generated).glob(pattern) if (folder / generated).is_dir() else []:
            old.unlink()
    pages = write_stream_files(results, folder) if results else []
    header_path = folder / "header.md"
    header = header_path.read_text(encoding="utf-8").strip() if header_path.is_file() else "# Leaderboard"
    verified = verified_lines(read_verified(folder), results)
    tables = summary_frames(results, SUMMARY_METRICS) if results else {}
    protocols = {page.protocol for page in pages}
    beside = {protocol: [e for e in reported if e.get("protocol") == protocol] for protocol in protocols}
    rest = [e for e in reported if e.get("protocol") not in protocols]
    proxies = {page.label: [rank.sentence() for rank in proxy_ranks(tables[page.label], beside[page.protocol])] for page in pages}
    reference = read_settings(folder).get("reference")
    markdown = markdown_page(header, pages, tables, beside, rest, proxies, verified, reference)
    write_atomic(folder / "README.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    page = html_page(pages, tables, beside, rest, proxies, verified, reference)
    write_atomic(folder / "index.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))


DIFFERENCES_TITLE = "Paired differences with the best of each column (row minus best, ± half the 95% interval)"


SETTINGS = {"reference": "the row label of the untouched model, which each stream's headroom is measured against (a string)"}


def read_settings(folder: Path) -> dict[str, Any]:
    """`settings.json` of a leaderboard (none without the file): {"reference": ROW}; a bad one is a one-line error."""
    path = folder / "settings.json"
    if not path.is_file():
        return {}
    expected = "an object with optional keys " + "; ".join(f"{key}: {meaning}" for key, meaning in SETTINGS.items())
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({clip(str(exc))}); it must hold {expected}") from None
    if not isinstance(settings, dict) or set(settings) - set(SETTINGS):
        raise UserError(f"{path}: it must hold {expected}")
    reference = settings.get("reference")
    if reference is not None and (not isinstance(reference, str) or not reference or len(reference) > MAX_SEGMENT):
        raise UserError(f"{path}: 'reference' must be a row label (a non-empty string of at most {MAX_SEGMENT} characters), not {shown(reference)}")
    return settings


def markdown_page(
    header: str, pages: list[StreamPage], tables: dict[str, Any], beside: dict[str, list], rest: list, proxies: dict[str, list[str]], verified: list[str], reference: str | None = None
) -> str:
    """README.md from templates/leaderboard.md.j2; `header` is header.md's Markdown, placed as it is."""
    streams = [
        {
            "label": page.label,
            "protocol": page.protocol,
            "note": protocol_note(page.protocol, "md"),
            "table": MarkdownText(render_table(display_frame(tables[page.label], SUMMARY_METRICS, "md"), "md")),
            "notes": [MarkdownText(note) for note in table_notes(tables[page.label], "md", reference)],  # escaped by table_notes
            "differences": MarkdownText(render_table(differences_frame(tables[page.label], SUMMARY_METRICS, "md"), "md")),
            "reported": MarkdownText(reported_table(beside[page.protocol], "md")),
            "proxies": proxies[page.label],
            "curve": page.curve,
            "variants": page.variants,
        }
        for page in pages
    ]
    context = {
        "header": MarkdownText(header),
        "verified": verified,
        "rest": MarkdownText(reported_table(rest, "md")),
        "reported_title": REPORTED_TITLE,
        "caveat": REPORTED_CAVEAT,
        "differences_title": DIFFERENCES_TITLE,
    }
    return render("leaderboard.md.j2", streams=streams, **context).rstrip() + "\n"


def html_page(pages: list[StreamPage], tables: dict[str, Any], beside: dict[str, list], rest: list, proxies: dict[str, list[str]], verified: list[str], reference: str | None = None) -> str:
    """index.html from templates/leaderboard.html.j2, with templates/leaderboard.js inlined."""
    streams = [
        {
            "label": page.label,
            "protocol": page.protocol,
            "note": protocol_note(page.protocol, "html"),
            "table": board_table(page, tables[page.label]),
            "notes": [Markup(note) for note in table_notes(tables[page.label], "html", reference)],  # escaped by table_notes
            "differences": Markup(render_table(differences_frame(tables[page.label], SUMMARY_METRICS, "html"), "unsafehtml")),  # cells escaped by the frame
            "reported": Markup(reported_table(beside[page.protocol], "html")),  # tabulate's html format escapes the cells
            "proxies": proxies[page.label],
            "curve": page.curve,
        }
        for page in pages
    ]
    # Inlined rather than copied beside the page: index.html stays one file that works wherever it is opened.
    script = Markup(package_text("leaderboard.js"))
    context = {"rest": Markup(reported_table(rest, "html")), "reported_title": REPORTED_TITLE, "caveat": REPORTED_CAVEAT, "differences_title": DIFFERENCES_TITLE, "verified": verified}
    return render("leaderboard.html.j2", title="cl_bench leaderboard", streams=streams, script=script, **context)


# ---------------------------------------------------------------------------------- verified.json


def read_verified(folder: Path) -> list[dict[str, Any]]:
    """The rows `clbench verify` re-ran (none without `verified.json`), each checked; a bad file is a one-line error."""
    path = folder / VERIFIED
    if not path.is_file():
        return []
    expected = "{'schema': 'cl_bench.verified/1', 'rows': [...]}, as `clbench verify` writes it; delete it to drop the record"
    try:
        record = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda name: math.nan)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: not valid JSON ({clip(str(exc))}); it must hold {expected}") from None
    if not isinstance(record, dict) or record.get("schema") != "cl_bench.verified/1" or not isinstance(record.get("rows"), list):
        raise UserError(f"{path}: it must hold {expected}")
    for number, row in enumerate(record["rows"]):
        fields = {"run_id": str, "label": str, "stream": str, "verified": str, "verdict": str, "seed": int}
        if not isinstance(row, dict) or any(not isinstance(row.get(key), kind) for key, kind in fields.items()):
            raise UserError(f"{path}: row {number} must hold {', '.join(fields)} (run_id, label, stream, verified, verdict: strings; seed: an integer)")
        difference = row.get("largest_cell_difference")
        if difference is not None and (isinstance(difference, bool) or not isinstance(difference, (int, float)) or not math.isfinite(difference)):
            raise UserError(f"{path}: row {number}: 'largest_cell_difference' must be a number or null, not {shown(difference)}")
    return record["rows"]


def verified_lines(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[str]:
    """The header's record of `clbench verify`: when rows were last re-run and what they gave (only
    rows whose result is still published)."""
    published_ids = {d["run_id"] for d in results}
    current = [row for row in rows if row["run_id"] in published_ids]
    if not current:
        return ["No row has been re-run with clbench verify yet."]
    last = max(row["verified"] for row in current)
    lines = [f"Rows last verified on {last[:10]} with clbench verify ({len(current)} re-run from their configs):"]
    for row in sorted(current, key=lambda r: (r["stream"], r["label"], r["seed"])):
        difference = row.get("largest_cell_difference")
        shown_difference = "-" if difference is None else f"{difference:.3g}"
        lines.append(f"{row['stream']}, {row['label']}, seed {row['seed']}: {row['verdict']} (largest cell difference {shown_difference}; {row['verified'][:10]})")
    return lines


def _links(variant: Variant) -> Markup:
    """A row's files: each seed's result, the row's config and its matrix plot (Markup.format escapes the names)."""
    seeds = Markup(" ").join(Markup('<a href="{}">seed {}</a>').format(result_location(d).as_posix(), d["seed"]) for d in variant.runs)
    return seeds + Markup(' · <a href="configs/{}">config</a> · <a href="plots/{}">matrix</a>').format(variant.config, variant.plot)


def board_table(page: StreamPage, table) -> Markup:
    """A stream's table for index.html: the report's cells plus a backbone column and each row's files."""
    frame = display_frame(table, SUMMARY_METRICS, "html")
    variants = {v.label: v for v in page.variants}
    rows = [variants[label] for label in table.index]
    frame.insert(0, "backbone", [escape.html(v.backbone) for v in rows])
    frame["files"] = [_links(v) for v in rows]
    return Markup(render_table(frame, "unsafehtml").replace("<table>", '<table class="board">', 1))  # cells escaped above
