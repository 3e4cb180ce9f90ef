"""The tables' 95% intervals, paired differences and ties (cl_bench.publish.intervals): the
intervals cover a known truth about 95% of the time on simulated result files, and reduce to
Student's t where only seeds vary."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from toys import as_schema_4, result_document

from cl_bench.cells import running_accuracy
from cl_bench.publish.intervals import BASIS_EXAMPLES, BASIS_SEEDS, table_stats
from cl_bench.results import metrics
from cl_bench.results.outcomes import encode_bits

LAST = {"last": ("metric", 0)}


def simulated_runs(rng, p: np.ndarray, difficulty: np.ndarray, method: str, seeds: int, seed_sd: float) -> list[dict]:
    """Result documents of `seeds` runs on one test set: example e of task j is right with
    probability p[i, j] + difficulty[j, e] + a seed's effect on the cell (normal, sd `seed_sd`)."""
    tasks, examples = difficulty.shape
    runs = []
    for seed in range(seeds):
        effect = np.clip(rng.normal(0.0, seed_sd, size=p.shape), -0.09, 0.09)
        acc, cells = [], []
        for i in range(tasks + 1):
            rights = [rng.random(examples) < p[i, j] + difficulty[j] + effect[i, j] for j in range(tasks)]
            acc.append([running_accuracy(right, 256) for right in rights])
            cells.append([encode_bits(right) for right in rights])
        runs.append(
            {
                "run_id": f"{method}{seed}",
                "schema": "cl_bench.result/5",
                "seed": seed,
                "acc_matrix": acc,
                "control_matrix": [[] for _ in acc],
                "scenario": {"protocol": "mtil", "test_sizes": [examples] * tasks, "control_sets": []},
                "metrics": metrics.compute(acc, None, protocol="mtil", test_sizes=[examples] * tasks),
                "outcomes": {"batch_sizes": [256] * len(acc), "control_sizes": [], "acc": cells, "control": [[] for _ in acc]},
            }
        )
    return runs


def test_intervals_and_paired_differences_cover_the_truth_about_95_percent_of_the_time():
    """200 simulated tables of two methods, 3 seeds each, 2 tasks of 200 test examples drawn anew
    from a population of examples of varied difficulty: the truth is the population's expected
    `last` (over seeds and test sets), and the difference of the two methods' truths."""
    rng = np.random.default_rng(2026)
    covered = {"interval": 0, "difference": 0, "seeds only": 0}
    datasets = 200
    for index in range(datasets):
        p = rng.uniform(0.35, 0.65, size=(3, 2))
        shift = rng.uniform(-0.05, 0.05)  # method b's accuracy differs from a's by this in every cell
        difficulty = rng.uniform(-0.25, 0.25, size=(2, 200))  # the test set: shared by seeds, rows and methods
        rows = {"a": simulated_runs(rng, p, difficulty, "a", 3, 0.02), "b": simulated_runs(rng, p + shift, difficulty, "b", 3, 0.02)}
        found = table_stats(rows, LAST, resamples=100, random_seed=index)
        assert found.basis == BASIS_EXAMPLES
        covered["interval"] += found.estimates["last"]["a"].contains(100 * p[-1].mean())
        best = found.best["last"]
        other = "b" if best == "a" else "a"
        truth = 100 * shift * (1 if other == "b" else -1)
        covered["difference"] += found.versus_best["last"][other].contains(truth)
        # without outcomes the interval is over seeds only: it covers the truth on this test set
        seeds_only = table_stats({"a": [as_schema_4_like(d) for d in rows["a"]]}, LAST)
        assert seeds_only.basis == BASIS_SEEDS
        covered["seeds only"] += seeds_only.estimates["last"]["a"].contains(100 * (p[-1] + difficulty.mean(axis=1)).mean())
    coverage = {key: count / datasets for key, count in covered.items()}
    print("coverage", coverage)
    assert all(0.90 <= value <= 0.99 for value in coverage.values()), coverage


def as_schema_4_like(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "outcomes"}


def test_with_seeds_only_the_interval_is_students_t():
    values = [70.0, 74.0, 66.0]
    runs = [result_document([[50.0, 40.0], [90.0, 45.0], [v, v]], [[90.0], [85.0], [72.0]], method="a", seed=s) for s, v in enumerate(values)]
    found = table_stats({"a": [as_schema_4(d) for d in runs]}, LAST)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    estimate = found.estimates["last"]["a"]
    assert estimate.low == pytest.approx(low, rel=1e-12) and estimate.high == pytest.approx(high, rel=1e-12)
    assert found.basis == BASIS_SEEDS and found.why_seeds_only == "result files without per-example outcomes (schema 4)"
    assert estimate.value == 70.0
    one_seed = table_stats({"a": [as_schema_4(runs[0])]}, LAST).estimates["last"]["a"]
    assert one_seed.value == 70.0 and one_seed.low is None and one_seed.detectable() is None  # one seed, no outcomes: no interval


def test_rows_within_their_paired_difference_of_the_best_are_tied():
    def runs(method: str, finals: list[float]) -> list[dict]:
        return [result_document([[50.0, 40.0], [90.0, 45.0], [v, v]], [[90.0], [85.0], [72.0]], method=method, seed=s, examples=200) for s, v in enumerate(finals)]

    rows = {"best": runs("best", [80.0, 81.0, 79.0]), "close": runs("close", [79.5, 80.5, 79.0]), "far": runs("far", [60.0, 61.0, 59.5])}
    found = table_stats(rows, {"last": ("metric", 0), "forgetting": ("metric", 0)}, resamples=200)
    assert found.basis == BASIS_EXAMPLES and found.best["last"] == "best"
    assert found.tied["last"] == {"best", "close"}
    assert found.versus_best["last"]["far"].value == pytest.approx(-20.0, abs=0.5) and found.versus_best["last"]["far"].high < 0
    assert found.detectable["last"] is not None and found.detectable["last"] > 0
    assert found.best["forgetting"] == "best"  # smaller is better: 90 - 80 against 90 - 79.7 and 90 - 60
