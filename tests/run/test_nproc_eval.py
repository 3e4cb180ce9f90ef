"""Sharded evaluation in multi-process runs (`--nproc`): each process evaluates a contiguous share
of every cell's evaluation batches and rank 0 computes the cells from the gathered per-example
outcomes; the result is one process's bit for bit (docs/multi-process.md, Sharded evaluation).

The two-process runs are tests/two_process_runs.py's, trained through one launch for the whole
session (xdist group "nproc": its tests share one worker and its processes).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from two_process_runs import EVAL_LOG, config, registry, toy_settings

from cl_bench import CellScorer, run
from cl_bench.errors import UserError
from cl_bench.running.distributed import evaluation_share
from cl_bench.running.evaluation import keeps_outcomes, share_outcomes

pytestmark = pytest.mark.xdist_group("nproc")


def assert_same_result(one, two) -> None:
    assert two.data["execution"]["nproc"] == 2 and two.run_id == one.run_id
    assert two.acc_matrix == one.acc_matrix and two.control_matrix == one.control_matrix
    assert two.data["outcomes"] == one.data["outcomes"] and two.metrics == one.metrics


@pytest.mark.parametrize(("batches", "size"), [(17, 2), (16, 2), (3, 2), (1, 2), (0, 2), (5, 3), (2, 4), (7, 1)])
def test_evaluation_shares_are_contiguous_in_order_and_even(batches, size):
    shares = [evaluation_share(batches, size, rank) for rank in range(size)]
    assert [i for share in shares for i in share] == list(range(batches))  # every batch once, in rank order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert evaluation_share(1, 2, 0) == range(0, 0) and evaluation_share(1, 2, 1) == range(0, 1)


class _NoOutcomes(CellScorer):
    def __init__(self) -> None:  # keeps none: CellScorer.__init__ not called
        pass


class _WrongOutcomes(CellScorer):
    def outcomes(self):
        return [True] * sum(len(c) for c in self._correct)  # all right, whatever was predicted


def test_a_share_travels_with_outcomes_only_where_they_recompute_its_score():
    outputs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0, 0, 1, 1])
    scorers = [CellScorer(), _WrongOutcomes()]
    for scorer in scorers:
        scorer.update(outputs[:3], targets[:3])
        scorer.update(outputs[3:], targets[3:])
    assert share_outcomes(scorers[0], [3, 2]) == [True, False, True, False, True]
    assert share_outcomes(scorers[1], [3, 2]) is None  # 100 % from outcomes, 60 % scored: rank 0 scores the cell alone
    assert share_outcomes(scorers[0], [3]) is None  # outcomes of 5 examples for 3
    assert share_outcomes(_NoOutcomes(), []) == []  # an empty share has nothing to check
    assert keeps_outcomes(CellScorer()) and keeps_outcomes(_WrongOutcomes()) and not keeps_outcomes(_NoOutcomes())


def test_a_share_of_a_sampled_cell_draws_what_its_batches_draw_in_the_whole_cell():
    from lm_toys import tiny_lm

    from cl_bench import TaskContext

    model = tiny_lm()
    model.eval()
    model.decoding = {"do_sample": True, "temperature": 5.0, "top_k": 50, "top_p": 1.0}  # hot: each batch's seed shows
    prompts, _ = model.encode_examples([{"prompt": "copy: red cat\n", "answer": ""}] * 4, "test")
    model.set_task_context(TaskContext("test", 0, "t", (), seed=7))
    whole = [model.generate(prompts, 6) for _ in range(3)]
    assert not torch.equal(whole[1], whole[2])
    model.set_task_context(TaskContext("test", 0, "t", (), seed=7, first_batch=1))  # a process whose share starts at batch 1
    assert all(torch.equal(model.generate(prompts, 6), batch) for batch in whole[1:])


# That sharded evaluation gives one process's matrices and outcomes for every built-in image
# method and for language models (greedy generation) is tests/run/test_nproc.py's two-process
# comparison, whose evaluations split unevenly (tests/two_process_runs.py); these check the split
# itself on the toy CLIPs of nproc_eval_toys, in the same launch.


@pytest.mark.slow
def test_the_shared_runs_evaluate_in_uneven_shares(two_process_runs):
    image = two_process_runs.results["seq-lora"].data
    # 3 batches of 40 per task (2 and 1 per process), the control set's 30 in one (fewer than the processes)
    assert image["scenario"]["test_sizes"] == [100, 100, 100] and image["outcomes"]["control_sizes"] == [30] and image["outcomes"]["batch_sizes"] == [40] * 4
    text = two_process_runs.results["seq-lora tiny-lm"].data
    # 2 batches per task (12 and 8: one per process), the control set's 10 in one
    assert text["scenario"]["test_sizes"] == [20] * 4 and text["outcomes"]["control_sizes"] == [10] and text["outcomes"]["batch_sizes"] == [12] * 5
    assert all(isinstance(cell, list) and len(cell) == 20 for row in text["outcomes"]["acc"] for cell in row)


def _batches_seen(log: Path) -> Counter:
    return Counter(tuple(map(int, line.split())) for line in log.read_text().splitlines())


# Evaluation batches (rank, size) logged over a run's 3 rows of 3 cells (two tasks, one control
# set), each cell in batches of 6, 6, 4: shared, rank 0 takes the first and rank 1 the other two;
# unshared, rank 0 evaluates them all; where a share's outcomes fall short, rank 0 evaluates its
# share and then the whole cell again.
SHARED = Counter({(0, 6): 9, (1, 6): 9, (1, 4): 9})
RANK_0 = Counter({(0, 6): 18, (0, 4): 9})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "seen", "outcomes"),
    [("logged", SHARED, True), ("plain", RANK_0, False), ("unsure", SHARED + RANK_0, False), ("counting-alone", RANK_0, True)],
)
def test_each_process_evaluates_its_share_or_rank_0_the_whole_cell(tmp_path, monkeypatch, two_process_runs, kind, seen, outcomes):
    monkeypatch.setenv(EVAL_LOG, str(tmp_path))
    one = run(config(tmp_path / "one", **toy_settings(kind)), registry=registry())
    two = two_process_runs.results[f"toy {kind}"]
    assert _batches_seen(tmp_path / f"{kind}.log") == Counter({(0, 6): 18, (0, 4): 9})
    assert _batches_seen(two_process_runs.root / "logs" / f"{kind}.log") == seen
    assert_same_result(one, two)
    assert all((cell is not None) == outcomes for name in ("acc", "control") for row in two.data["outcomes"][name] for cell in row)


@pytest.mark.slow
def test_an_evaluation_that_changes_the_state_per_share_stops_the_run(two_process_runs):
    error = two_process_runs.error
    assert isinstance(error, UserError)
    assert re.fullmatch(r"process \d of 2: evaluating row 0 changed the state of method 'seq-lora' or of its model differently in each process.*", str(error)), error
    assert not list(two_process_runs.folder("toy counting").glob("*.json"))  # nothing written
