"""95% intervals, paired differences, ties with the best and the smallest detectable difference
of a stream's table (docs/metrics.md, Intervals and ties).

A table's row is a method variant run with several seeds on one stream; its value in a column is
the mean over seeds of the per-seed metric. Two sources of chance move it: the seeds (training
randomness) and the test examples (the test sets are samples). Its variance is estimated in two
parts:

- the seeds: s^2 / S, the sample variance over the S seeds (ddof 1) divided by S. Each seed's
  value also carries the test-set noise its own mistakes add, so this part holds that too;
- the test examples: what every seed shares of the test set's sampling, estimated by a
  nonparametric bootstrap over test examples (`scipy.stats.bootstrap`: each task's and control
  set's examples resampled with replacement, the same draw for every seed, row and method of the
  table, each cell recomputed from the result files' per-example outcomes) as the mean bootstrap
  covariance between two different seeds' values (for one seed: its bootstrap variance).

The interval is value +/- the 97.5% point of the estimate's error, whose distribution is the
generalized pivotal quantity of a mean with an estimated and a known variance component
(Weerahandi 1993): error = Z * sqrt(sum_g s_g^2 (S_g - 1) / (S_g chi2_{S_g - 1}) + examples part),
Z standard normal and chi2 a chi-squared draw per group of seeds (`scipy.stats`, a fixed number
of draws from a fixed seed). With one group of seeds alone it is Student's t interval (computed
exactly); with the examples part alone the normal one; in between it keeps t's caution about few seeds even when
their values happen to agree (the Welch-Satterthwaite t does not: with 2 or 3 seeds it covered
88-91% in the simulation of tests/publish/test_intervals.py). A paired difference between two rows
is the same computation on the per-seed differences (same seeds, same resampled examples); rows
with different seeds are compared unpaired (Welch's two groups). Results without per-example
outcomes (schema <= 4, or a plugin's scorer that keeps none) have the seeds part only.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cl_bench.results.metrics import LOWER_IS_BETTER, compute

LEVEL = 0.95
POWER = 0.80
RESAMPLES = 1000
RANDOM_SEED = 0  # the bootstrap's generator: a regenerated page gives the same intervals
MAX_GATHER = 1 << 22  # examples x replicates per batch of the bootstrap (bounds its memory)

BASIS_EXAMPLES = "seeds and test examples"
BASIS_SEEDS = "seeds only"


DRAWS = 20000  # draws of the pivotal quantity per interval


@functools.cache
def _draws(degrees: tuple[int, ...]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Standard normal draws and, per group of seeds, chi-squared draws divided by their degrees of
    freedom: the same draws for every interval (common random numbers), so a page regenerates
    identically."""
    from scipy import stats

    rng = np.random.default_rng(RANDOM_SEED)
    normal = stats.norm.rvs(size=DRAWS, random_state=rng)
    return normal, tuple(stats.chi2.rvs(df, size=DRAWS, random_state=rng) / df for df in degrees)


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds (or a difference of two), with its 95% interval where one exists.

    `seed_parts` holds, per group of seeds, (s^2 / S, S - 1): the seeds' share of the variance and
    its degrees of freedom; `examples` the test examples' share (None without outcomes)."""

    value: float
    seed_parts: tuple[tuple[float, int], ...] = ()
    examples: float | None = None
    seeds: int = 1

    @property
    def se(self) -> float | None:
        """The estimate's standard error (None: no interval, a single seed without outcomes)."""
        if not self.seed_parts and self.examples is None:
            return None
        return math.sqrt(sum(part for part, _ in self.seed_parts) + (self.examples or 0.0))

    def _exact(self, probability: float) -> float | None:
        """The error's `probability` point where it is a known distribution: Student's t for one
        group of seeds alone, the normal for the examples part alone; None otherwise."""
        from scipy import stats

        if len(self.seed_parts) == 1 and not self.examples:
            return float(stats.t.ppf(probability, self.seed_parts[0][1]) * math.sqrt(self.seed_parts[0][0]))
        if not self.seed_parts and self.examples is not None:
            return float(stats.norm.ppf(probability) * math.sqrt(self.examples))
        return None

    def _errors(self) -> np.ndarray:
        normal, chis = _draws(tuple(df for _, df in self.seed_parts))
        variance = sum((part / chi for (part, _), chi in zip(self.seed_parts, chis)), np.zeros(DRAWS)) + (self.examples or 0.0)
        return normal * np.sqrt(variance)

    @functools.cached_property
    def half_width(self) -> float | None:
        if self.se is None:
            return None
        exact = self._exact(0.5 + LEVEL / 2)
        return exact if exact is not None else float(np.quantile(np.abs(self._errors()), LEVEL))

    @property
    def low(self) -> float | None:
        half = self.half_width
        return None if half is None else self.value - half

    @property
    def high(self) -> float | None:
        half = self.half_width
        return None if half is None else self.value + half

    def contains(self, point: float) -> bool:
        low, high = self.low, self.high
        return low is not None and high is not None and low <= point <= high

    def detectable(self) -> float | None:
        """The smallest true difference that a test at the 5% level (two-sided) finds with 80%
        power: the 97.5% plus the 80% point of the estimate's error (with a t error,
        (t_0.975 + t_0.80) x se; Bloom 1995, the minimum detectable effect)."""
        if self.se is None:
            return None
        first, second = self._exact(0.5 + LEVEL / 2), self._exact(POWER)
        if first is not None and second is not None:
            return first + second
        errors = self._errors()
        return float(np.quantile(errors, 0.5 + LEVEL / 2) + np.quantile(errors, POWER))


@dataclass
class TableStats:
    """What a table shows beside its means: intervals, differences with the best, ties."""

    basis: str  # BASIS_EXAMPLES or BASIS_SEEDS
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)  # column -> row -> estimate
    best: dict[str, str] = field(default_factory=dict)  # column -> the row with the best value
    versus_best: dict[str, dict[str, Estimate]] = field(default_factory=dict)  # column -> row -> (row - best)
    tied: dict[str, set[str]] = field(default_factory=dict)  # column -> rows statistically tied with the best (best included)
    detectable: dict[str, float | None] = field(default_factory=dict)  # column -> median smallest detectable difference with the best
    why_seeds_only: str = ""


# ------------------------------------------------------------------------------ per-run values


def column_values(acc: Any, control: Any, scenario: Mapping[str, Any], columns: Mapping[str, tuple[str, int]]) -> dict[str, float | None]:
    """Each column's value for one run's matrices: ("metric", 0) a metric of `compute`, ("final", j)
    the score of task j after the last task."""
    wanted = [name for name, (kind, _) in columns.items() if kind == "metric"]
    metrics = compute(acc, control if scenario.get("control_sets") else None, protocol=scenario["protocol"], test_sizes=scenario["test_sizes"], only=wanted) if wanted else {}
    return {name: (metrics.get(name) if kind == "metric" else float(acc[-1][index])) for name, (kind, index) in columns.items()}


def stored_values(data: Mapping[str, Any], columns: Mapping[str, tuple[str, int]]) -> dict[str, float | None]:
    """A result's own values of the columns: its stored metrics and final row."""
    return {name: (data["metrics"].get(name) if kind == "metric" else float(data["acc_matrix"][-1][index])) for name, (kind, index) in columns.items()}


# ------------------------------------------------------------------------------ the bootstrap


def _outcome_arrays(runs: Sequence[Mapping[str, Any]]) -> tuple[list[np.ndarray], list[np.ndarray]] | str:
    """Per task and per control set: the runs' per-example values, shape (runs, rows, examples);
    or why the test examples cannot be resampled."""
    from cl_bench.results.outcomes import example_values

    first = runs[0]
    sizes, control_sizes = first["scenario"]["test_sizes"], first.get("outcomes", {}).get("control_sizes")
    for data in runs:
        if "outcomes" not in data:
            return f"result files without per-example outcomes (schema {data['schema'].rsplit('/', 1)[-1]})"
        if data["scenario"]["test_sizes"] != sizes or data["outcomes"]["control_sizes"] != control_sizes:
            return "runs whose test sets differ in size"
        if any(cell is None for key in ("acc", "control") for row in data["outcomes"][key] for cell in row):
            return "cells without per-example outcomes (a scorer that keeps none)"

    def column(key: str, index: int, count: int) -> np.ndarray:
        cells = [[example_values(row[index], count) for row in data["outcomes"][key]] for data in runs]
        return np.array([[np.zeros(count) if cell is None else cell for cell in rows] for rows in cells], dtype=np.float32)

    return [column("acc", j, n) for j, n in enumerate(sizes)], [column("control", k, n) for k, n in enumerate(control_sizes)]


def _counts(indices: np.ndarray, size: int) -> np.ndarray:
    """Resampled example indices (batch, size) as counts per example (batch, size)."""
    batch = indices.shape[0]
    flat = (indices + size * np.arange(batch)[:, None]).ravel()
    return np.bincount(flat, minlength=batch * size).reshape(batch, size).astype(np.float32)


def example_replicates(runs: Sequence[Mapping[str, Any]], columns: Mapping[str, tuple[str, int]], resamples: int = RESAMPLES, random_seed: int = RANDOM_SEED) -> np.ndarray | str:
    """Bootstrap replicates over test examples of every run's column values: shape (runs,
    columns, resamples), NaN where a metric is undefined; or why there are none.

    One `scipy.stats.bootstrap` call resamples every task's and control set's examples (each set
    on its own, with replacement); a replicate's cells are the resampled examples' mean outcome,
    the same draw for every run, so that replicates pair across seeds and methods."""
    from scipy import stats

    arrays = _outcome_arrays(runs)
    if isinstance(arrays, str):
        return arrays
    tasks, controls = arrays
    sets = [*tasks, *controls]
    scenario = runs[0]["scenario"]
    names = list(columns)

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        batch = indices[0].shape[0]
        cells = [np.einsum("krn,bn->krb", values, _counts(index, values.shape[-1])) / values.shape[-1] for values, index in zip(sets, indices)]
        acc = np.stack(cells[: len(tasks)], axis=2) if tasks else None  # (runs, rows, tasks, batch)
        control = np.stack(cells[len(tasks) :], axis=2) if controls else np.zeros((len(runs), acc.shape[1] if acc is not None else 0, 0, batch))
        assert acc is not None  # a result has at least one task
        out = np.full((len(runs), len(names), batch), np.nan)
        for b in range(batch):
            for k in range(len(runs)):
                values = column_values(100.0 * acc[k, :, :, b], 100.0 * control[k, :, :, b], scenario, columns)
                out[k, :, b] = [np.nan if values[n] is None else values[n] for n in names]
        return out.reshape(len(runs) * len(names), batch)

    batch = max(1, min(resamples, MAX_GATHER // max(values.shape[-1] for values in sets)))  # the counts of one batch: batch x examples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a metric that is constant over replicates is not a problem here
        result = stats.bootstrap(
            tuple(np.arange(values.shape[-1]) for values in sets),
            statistic,
            n_resamples=resamples,
            batch=batch,
            vectorized=True,
            method="percentile",
            rng=np.random.default_rng(random_seed),
        )
    return np.asarray(result.bootstrap_distribution).reshape(len(runs), len(names), resamples)


# ------------------------------------------------------------------------------ estimates


def _seeds_part(values: np.ndarray) -> tuple[float, int] | None:
    """(s^2 / S, S - 1) of one group's per-seed values; None for a single seed."""
    count = len(values)
    if count < 2:
        return None
    return float(np.var(values, ddof=1)) / count, count - 1


def _shared(first: np.ndarray, second: np.ndarray | None = None) -> float:
    """The mean bootstrap covariance between two different runs' replicates (rows of `first`, or
    of `first` and `second`): what they share of the test examples' sampling. One run alone: its
    own bootstrap variance."""
    if second is None:
        if len(first) == 1:
            return float(np.var(first[0], ddof=1))
        matrix = np.cov(first)
        count = len(first)
        return float((matrix.sum() - np.trace(matrix)) / (count * (count - 1)))
    centred_first = first - first.mean(axis=1, keepdims=True)
    centred_second = second - second.mean(axis=1, keepdims=True)
    return float((centred_first @ centred_second.T).mean() / (first.shape[1] - 1))


def estimate(groups: Sequence[tuple[float, np.ndarray, np.ndarray | None]]) -> Estimate | None:
    """sum_g sign_g * mean(values_g), with its interval: `groups` holds (sign, per-seed values,
    per-seed replicates over examples or None). None where a value is undefined (NaN)."""
    if any(np.isnan(values).any() for _, values, _ in groups):
        return None
    value = float(sum(sign * np.mean(values) for sign, values, _ in groups))
    seeds = min(len(values) for _, values, _ in groups)
    parts = [_seeds_part(values) for _, values, _ in groups]
    examples = None
    replicates = [r for _, _, r in groups]
    if all(r is not None for r in replicates):
        if any(np.isnan(r).any() for r in replicates if r is not None):
            return Estimate(value, seeds=seeds)  # a metric undefined in some replicate: no interval
        examples = 0.0
        for i, (sign_i, _, first) in enumerate(groups):
            for j, (sign_j, _, second) in enumerate(groups):
                assert first is not None and second is not None
                examples += sign_i * sign_j * (_shared(first) if i == j else _shared(first, second))
        examples = max(examples, 0.0)
    if any(p is None for p in parts):  # a group of one seed: the seeds part is unknown
        return Estimate(value, examples=examples, seeds=seeds)
    return Estimate(value, seed_parts=tuple(p for p in parts if p is not None), examples=examples, seeds=seeds)


def table_stats(
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    columns: Mapping[str, tuple[str, int]],
    *,
    resamples: int = RESAMPLES,
    random_seed: int = RANDOM_SEED,
) -> TableStats:
    """Intervals, differences with the best and ties for one stream's table: `rows` maps each row
    label to its complete runs (one per seed)."""
    labels = list(rows)
    runs = [data for label in labels for data in sorted(rows[label], key=lambda d: d["seed"])]
    replicates = example_replicates(runs, columns, resamples, random_seed) if runs else "no runs"
    stats = TableStats(BASIS_EXAMPLES if not isinstance(replicates, str) else BASIS_SEEDS, why_seeds_only=replicates if isinstance(replicates, str) else "")
    # Per row: its seeds, their stored values and (when resampled) their replicates, per column.
    offsets, start = {}, 0
    for label in labels:
        offsets[label] = (start, start + len(rows[label]))
        start += len(rows[label])
    stored = np.array([[np.nan if v is None else v for v in stored_values(data, columns).values()] for data in runs], dtype=float)

    def group(label: str, column: int, seeds: Sequence[int] | None = None):
        begin, end = offsets[label]
        chosen = [i for i in range(begin, end) if seeds is None or runs[i]["seed"] in seeds]
        values = stored[chosen, column]
        return values, (None if isinstance(replicates, str) else replicates[chosen, column, :])

    for position, column in enumerate(columns):
        estimates = {}
        for label in labels:
            values, reps = group(label, position)
            found = estimate([(1.0, values, reps)])
            if found is not None:
                estimates[label] = found
        stats.estimates[column] = estimates
        if not estimates:
            continue
        lower = column in LOWER_IS_BETTER
        best = (min if lower else max)(estimates, key=lambda label: estimates[label].value)
        stats.best[column] = best
        differences, tied, detectable = {}, {best}, []
        for label in estimates:
            if label == best:
                continue
            difference = difference_estimate(group, label, best, position, runs, offsets)
            if difference is None:
                continue
            differences[label] = difference
            if difference.value == 0.0 or difference.contains(0.0):
                tied.add(label)
            found_detectable = difference.detectable()
            if found_detectable is not None:
                detectable.append(found_detectable)
        stats.versus_best[column] = differences
        stats.tied[column] = tied
        stats.detectable[column] = float(np.median(detectable)) if detectable else None
    return stats


def difference_estimate(group, label: str, other: str, column: int, runs, offsets) -> Estimate | None:
    """`label` minus `other` in one column: paired over their common seeds when both ran the same
    two or more seeds, otherwise unpaired (Welch)."""
    seeds_of = {name: [runs[i]["seed"] for i in range(*offsets[name])] for name in (label, other)}
    if sorted(seeds_of[label]) == sorted(seeds_of[other]) and len(seeds_of[label]) >= 2:
        mine, my_reps = group(label, column)
        theirs, their_reps = group(other, column)
        paired_reps = None if my_reps is None or their_reps is None else my_reps - their_reps
        return estimate([(1.0, mine - theirs, paired_reps)])
    mine, my_reps = group(label, column)
    theirs, their_reps = group(other, column)
    return estimate([(1.0, mine, my_reps), (-1.0, theirs, their_reps)])
