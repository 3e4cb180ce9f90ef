"""Tables (pandas + tabulate). `render_table` is the one function that turns a frame into text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .metrics import METRICS

FORMATS = {"md": "github", "latex": "latex_booktabs", "text": "simple", "html": "html", "csv": "csv"}


def render_table(frame, fmt: str = "text", floatfmt: str = ".2f") -> str:
    """Render a pandas DataFrame as text, Markdown, LaTeX, HTML or CSV."""
    if fmt == "csv":
        return frame.to_csv()
    from tabulate import tabulate

    return tabulate(frame, headers="keys", tablefmt=FORMATS[fmt], floatfmt=floatfmt, missingval="-")


def matrix_frame(result: Mapping[str, Any]):
    """The accuracy matrix with named rows (after which task) and columns (which test set)."""
    import pandas as pd

    scenario = result["scenario"]
    tasks = scenario["task_order"]
    controls = [f"{c['name']} (control)" for c in scenario.get("control_sets", [])]
    rows = ["zero-shot", *(f"after {t}" for t in tasks)][: len(result["acc_matrix"])]
    data = [list(a) + list(c) for a, c in zip(result["acc_matrix"], result["control_matrix"])]
    return pd.DataFrame(data, index=pd.Index(rows, name="accuracy %"), columns=[*tasks, *controls])


def metrics_frame(result: Mapping[str, Any]):
    import pandas as pd

    values = result.get("metrics") or {}
    return pd.DataFrame({"value": [values.get(m) for m in METRICS]}, index=pd.Index(METRICS, name="metric"))


def format_run(result: Mapping[str, Any], fmt: str = "text") -> str:
    """What `clbench run` prints: a header, the accuracy matrix and the metrics."""
    timings = result.get("timings", {})
    header = (
        f"{result['scenario']['name']} | {result['method']['name']} | {result['backbone']['name']} | "
        f"seed {result['seed']} | {result['status']} | {timings.get('total', 0):.1f} s"
    )
    parts = [header, "", render_table(matrix_frame(result), fmt)]
    if result.get("metrics"):
        parts += ["", render_table(metrics_frame(result), fmt, floatfmt=".3f")]
    return "\n".join(parts)
