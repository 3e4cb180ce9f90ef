"""Metrics against matrices computed by hand (docs/metrics.md)."""

import math

import numpy as np
import pytest

from cl_bench.results import metrics

pytestmark = pytest.mark.unit

# Rows: before training, after task 1, 2, 3. Columns: tasks 1, 2, 3.
A = [
    [50.0, 40.0, 30.0],
    [80.0, 45.0, 35.0],
    [70.0, 90.0, 38.0],
    [60.0, 85.0, 95.0],
]
C = [[60.0, 80.0], [57.0, 78.0], [54.0, 76.0], [48.0, 72.0]]
N = [100, 300, 600]  # test images of tasks 1, 2, 3


def compute(acc, control=None, protocol="mtil", sizes=None):
    return metrics.compute(acc, control, protocol=protocol, test_sizes=sizes or [1] * len(acc[0]))


def test_every_metric_matches_the_hand_computation():
    m = metrics.compute(A, C, protocol="mtil", test_sizes=N)
    assert m["last"] == pytest.approx((60 + 85 + 95) / 3)
    # mean over rows 1..3, all columns: (80+45+35 + 70+90+38 + 60+85+95) / 9
    assert m["avg"] == pytest.approx(598 / 9)
    # j=2: mean(A[1,2]) = 45; j=3: mean(A[1,3], A[2,3]) = (35+38)/2 = 36.5; mean = 40.75
    assert m["transfer"] == pytest.approx(40.75)
    assert m["plasticity"] == pytest.approx((80 + 90 + 95) / 3)
    # j=1: 60-80 = -20; j=2: 85-90 = -5 -> -12.5
    assert m["bwt"] == pytest.approx(-12.5)
    # j=1: max(A[1,1], A[2,1]) - A[3,1] = 80-60 = 20; j=2: max(A[2,2]) - A[3,2] = 90-85 = 5 -> 12.5
    assert m["forgetting"] == pytest.approx(12.5)
    # j=2: A[1,2]-A[0,2] = 45-40 = 5; j=3: A[2,3]-A[0,3] = 38-30 = 8 -> 6.5
    assert m["fwt"] == pytest.approx(6.5)
    # (48/60 + 72/80) / 2 = (0.8 + 0.9) / 2
    assert m["zs_retention"] == pytest.approx(0.85)
    assert (m["last_task_mean"], m["avg_all_cells"]) == (m["last"], m["avg"])
    assert set(m) == set(metrics.METRICS)


def test_class_il_pools_the_seen_tasks_by_their_test_sizes():
    m = metrics.compute(A, C, protocol="class-il", test_sizes=N)
    # after task 3, all 1000 images: (100*60 + 300*85 + 600*95) / 1000
    assert m["last"] == m["last_pooled"] == pytest.approx(88.5)
    # after task 1: 80 (task 1 only); after 2: (100*70 + 300*90) / 400 = 85; after 3: 88.5
    assert m["avg"] == m["avg_incremental"] == pytest.approx((80 + 85 + 88.5) / 3)
    # the per-task quantities stay under their own names, and the other metrics do not change
    mtil = metrics.compute(A, C, protocol="mtil", test_sizes=N)
    assert m["last_task_mean"] == pytest.approx((60 + 85 + 95) / 3) and m["avg_all_cells"] == pytest.approx(598 / 9)
    assert {k: v for k, v in m.items() if k not in ("last", "avg")} == {k: v for k, v in mtil.items() if k not in ("last", "avg")}


def test_pooling_over_equal_test_sizes_gives_the_incremental_task_mean():
    m = metrics.compute(A, protocol="class-il", test_sizes=[50, 50, 50])
    assert m["last"] == pytest.approx(m["last_task_mean"])
    assert m["avg"] == pytest.approx((80 + (70 + 90) / 2 + (60 + 85 + 95) / 3) / 3)  # unlearned cells never count


@pytest.mark.parametrize("sizes", [[10, 10], [10, 0, 10], [10, -1, 10], [10, math.nan, 10]])
def test_test_sizes_must_be_one_positive_count_per_task(sizes):
    with pytest.raises(ValueError, match="test_sizes"):
        metrics.compute(A, protocol="class-il", test_sizes=sizes)


def test_forgetting_uses_the_best_earlier_accuracy_not_the_first():
    a = [[0, 0, 0], [50, 0, 0], [90, 0, 0], [40, 0, 0]]
    assert compute(a)["forgetting"] == pytest.approx((50 + 0) / 2)  # task 1: 90-40; task 2: 0-0
    assert compute(a)["bwt"] == pytest.approx((-10 + 0) / 2)  # task 1: 40-50


def test_one_task_leaves_the_transfer_metrics_undefined():
    m = compute([[30.0], [90.0]])
    assert m["last"] == m["avg"] == m["plasticity"] == m["last_pooled"] == m["avg_incremental"] == 90.0
    assert m["bwt"] is m["forgetting"] is m["fwt"] is m["transfer"] is None
    assert m["zs_retention"] is None


def test_zero_shot_retention_is_undefined_when_the_start_is_zero():
    assert metrics.zs_retention([[0.0], [10.0]]) is None
    assert metrics.zs_retention([[50.0], [25.0]]) == 0.5


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], [[1.0], [2.0], [3.0]], [[1.0, math.nan], [2.0, 3.0], [4.0, 5.0]]])
def test_malformed_matrices_are_rejected(bad):
    with pytest.raises(ValueError):
        compute(bad)


def test_numpy_input_gives_the_same_numbers():
    assert metrics.compute(np.array(A), np.array(C), protocol="class-il", test_sizes=np.array(N)) == metrics.compute(A, C, protocol="class-il", test_sizes=N)


def test_instruct_streams_add_trace_op_and_bwt_computed_as_moram_collects_them():
    m = metrics.compute(A, C, protocol="instruct", test_sizes=N)
    assert m["op"] == pytest.approx((60 + 85 + 95) / 3)
    # min(A[3,j] - A[j,j], 0) over all three tasks: min(60-80, 0) = -20, min(85-90, 0) = -5, min(95-95, 0) = 0
    assert m["trace_bwt"] == pytest.approx(-25 / 3)
    assert m["bwt"] == pytest.approx(-12.5)  # the usual bwt stays beside it
    assert set(m) == {*metrics.METRICS, *metrics.INSTRUCT_METRICS}
    assert "op" not in compute(A)  # image protocols keep exactly their metrics


def test_trace_bwt_counts_a_gain_as_zero():
    gained = [[10.0, 10.0], [50.0, 20.0], [70.0, 60.0]]  # task 1 rises from 50 to 70 after task 2
    assert metrics.compute(gained, protocol="instruct", test_sizes=[1, 1])["trace_bwt"] == 0.0
    assert metrics.compute(gained, protocol="instruct", test_sizes=[1, 1])["bwt"] == pytest.approx(20.0)
