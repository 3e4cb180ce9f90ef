"""Proxy validity: does a stream rank methods as the real benchmark's published table does?

For a stream of a protocol whose papers' numbers sit in `reported.json` (embedded-xtail for
X-TAIL, embedded-mtil for MTIL, embedded-instruct for TRACE), each published table (the entries
sharing a `scenario`, e.g. "X-TAIL (order I)", and a backbone where it reports several) is
compared with our table over the methods both have: an entry's optional `cl_bench_method` names
the method of ours it reports (a row labelled with that name alone). The agreement is Kendall's tau-b of the two rankings by the protocol's
headline metric (`last`; `op` for instruct) with `scipy.stats.kendalltau` and its p-value (exact
for small tables without ties), and a 95% interval from the Fieller-Hartley-Pearson formula
(Fisher's z of tau with variance 0.437 / (n - 4), Fieller, Hartley and Pearson 1957), which needs
five methods or more and a tau below 1 in size. Below three methods in common there is no tau.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HEADLINE = ("last", "op")  # the metric a protocol's tables rank by: the first one both sides have
MINIMUM = 3  # methods in common below which no rank correlation is computed
INTERVAL_MINIMUM = 5  # the Fieller-Hartley-Pearson interval needs n > 4


@dataclass
class ProxyRank:
    """Our ranking against one published table."""

    table: str  # the reported `scenario`, e.g. "X-TAIL (order I)" (and its backbone where it reports several)
    source: str
    metric: str | None
    pairs: list[tuple[str, str, float, float]] = field(default_factory=list)  # (our row, paper's name, our value, paper's value)
    tau: float | None = None
    p_value: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def common(self) -> int:
        return len(self.pairs)

    def sentence(self) -> str:
        """One line of plain text saying what the comparison found."""
        names = ", ".join(f"{ours} as {theirs}" for ours, theirs, _, _ in self.pairs)
        which = f" ({names})" if names else " (no entry of this table names one of ours: its cl_bench_method key)"
        head = f"Proxy validity against the table {self.table}, from {self.source}: {self.common} method{'s' if self.common != 1 else ''} in common{which}"
        if self.tau is None and self.common >= MINIMUM:
            return f"{head}: no rank correlation, every value of one side is tied."
        if self.tau is None:
            return f"{head}: too few methods in common for a rank correlation (it needs {MINIMUM})."
        found = f"Kendall's tau of {self.metric} between our ranking and the paper's is {self.tau:.2f} (p = {self.p_value:.2f})"
        if self.low is None or self.high is None:
            why = f"fewer than {INTERVAL_MINIMUM} methods" if self.common < INTERVAL_MINIMUM else "tau of size 1"
            return f"{head}. {found}; no 95% interval ({why}: the Fieller-Hartley-Pearson formula needs more)."
        return f"{head}. {found}, 95% interval [{self.low:.2f}, {self.high:.2f}] (Fieller-Hartley-Pearson)."


def kendall(ours: Sequence[float], theirs: Sequence[float]) -> tuple[float, float, float | None, float | None]:
    """Kendall's tau-b, its p-value and its 95% Fieller-Hartley-Pearson interval (None, None below
    five pairs or at |tau| = 1)."""
    from scipy import stats

    found = stats.kendalltau(ours, theirs)
    tau, p_value = float(found.statistic), float(found.pvalue)
    count = len(ours)
    if count < INTERVAL_MINIMUM or not math.isfinite(tau) or abs(tau) >= 1.0 - 1e-9:  # tau-b of a perfect ranking can miss 1 by a rounding
        return tau, p_value, None, None
    z, spread = math.atanh(tau), stats.norm.ppf(0.975) * math.sqrt(0.437 / (count - 4))
    return tau, p_value, math.tanh(z - spread), math.tanh(z + spread)


def proxy_ranks(table, entries: Sequence[Mapping[str, Any]]) -> list[ProxyRank]:
    """One `ProxyRank` per published table among `entries` (reported.json entries of the stream's
    protocol), against our `table` (a `summary_frames` table: rows labelled, a column per metric)."""
    # A paper's table can report one stream on several backbones (TRACE on three language
    # models): each backbone's rows are a ranking of their own.
    backbones: dict[str, set[str]] = {}
    for entry in entries:
        backbones.setdefault(entry["scenario"], set()).add(str(entry.get("backbone", "")))
    tables: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        several = len(backbones[entry["scenario"]]) > 1
        tables.setdefault(f"{entry['scenario']}, {entry.get('backbone', '')}" if several else entry["scenario"], []).append(entry)
    ranks = []
    for name, reported in tables.items():
        metric = next((m for m in HEADLINE if m in table.columns and any(m in e["metrics"] for e in reported)), None)
        rank = ProxyRank(name, reported[0]["source"], metric)
        for entry in reported:
            ours = entry.get("cl_bench_method")
            if metric is None or not isinstance(ours, str) or ours not in table.index or metric not in entry["metrics"]:
                continue
            value = table.at[ours, metric]
            if isinstance(value, float) and math.isnan(value):
                continue
            rank.pairs.append((ours, entry["method"], float(value), float(entry["metrics"][metric])))
        if rank.common >= MINIMUM:
            rank.tau, rank.p_value, rank.low, rank.high = kendall([p[2] for p in rank.pairs], [p[3] for p in rank.pairs])
            if rank.tau is not None and math.isnan(rank.tau):  # every value tied on one side
                rank.tau = rank.p_value = None
        ranks.append(rank)
    return ranks
