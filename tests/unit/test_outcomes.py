"""Per-example outcomes (schema 5): the bitmap encoding, Avalanche's arithmetic, the text scorers'
means, and validation recomputing every cell exactly."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from toys import as_schema_4, result_document

from cl_bench.blocks import text_scores
from cl_bench.cells import mean_score, running_accuracy
from cl_bench.contracts.model import CellScorer
from cl_bench.errors import UserError
from cl_bench.results.outcomes import decode_bits, encode_bits, example_values
from cl_bench.results.validation import validate

pytestmark = pytest.mark.unit

ACC = [[20.0, 30.0], [80.0, 35.0], [70.0, 90.0]]
CONTROL = [[60.0], [58.0], [50.0]]


@pytest.mark.parametrize("count", [1, 7, 8, 9, 200, 1001])
def test_a_bitmap_round_trips_and_takes_a_bit_per_example(count):
    right = np.random.default_rng(count).random(count) < 0.6
    text = encode_bits(right)
    assert len(text) == 4 * math.ceil(math.ceil(count / 8) / 3)  # base64 of ceil(count / 8) bytes
    assert (decode_bits(text, count) == right).all()
    with pytest.raises(ValueError, match="bytes for"):
        decode_bits(text, count + 8)


def test_a_bitmap_with_a_bit_past_its_last_example_is_refused():
    with pytest.raises(ValueError, match="padding bits"):
        decode_bits(encode_bits([True] * 8), 7)
    with pytest.raises(ValueError, match="not base64"):
        decode_bits("not base64!", 8)


def avalanche_cell(right: np.ndarray, batch_size: int) -> float:
    """The cell as Avalanche's Accuracy gives it, batch by batch (what cl_bench stored before outcomes)."""
    from avalanche.evaluation.metrics import Accuracy

    accuracy = Accuracy()
    for start in range(0, len(right), batch_size):
        batch = torch.as_tensor(right[start : start + batch_size])
        accuracy.update(batch.long(), torch.ones_like(batch, dtype=torch.long))
    return 100.0 * float(accuracy.result())


def test_running_accuracy_is_avalanches_arithmetic_bit_for_bit():
    rng = np.random.default_rng(0)
    for _ in range(300):
        count, batch = int(rng.integers(1, 700)), int(rng.integers(1, 300))
        right = rng.random(count) < rng.random()
        assert running_accuracy(right, batch) == avalanche_cell(right, batch)
    # 115 of 200 right: Avalanche's (115 / 200) * 200 / 200 * 100 is 57.49999999999999, not 57.5
    right = np.arange(200) < 115
    assert running_accuracy(right, 256) == 57.49999999999999 == avalanche_cell(right, 256)


def test_the_default_scorer_keeps_the_outcomes_its_cell_counts():
    scorer = CellScorer()
    generator = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(300, 5, generator=generator), torch.randint(0, 5, (300,), generator=generator)
    for start in range(0, 300, 64):
        scorer.update(logits[start : start + 64], targets[start : start + 64])
    right = np.asarray(scorer.outcomes())
    assert right.dtype == bool and (right == (logits.argmax(1) == targets).numpy()).all()
    assert scorer.result() == running_accuracy(right, 64)


@pytest.mark.parametrize("name", sorted(text_scores.SCORERS))
def test_every_text_scorer_is_the_mean_of_its_per_example_scores(name):
    predictions = ["The answer is A because 12", "", "B", "print(<STR_LIT:hi>) x = 3", "a cat sat on the mat", "C\nno"]
    references = ["A", "A", "12", "print(hi) x = 3", "the cat sat on a mat", "C\nyes"]
    sources = ["src one", "src two", "three", "four", "the dog sat on the mat", "six"]
    each = text_scores.get_scorer(name, per_example=True)(predictions, references, sources)
    assert len(each) == len(predictions) and all(0.0 <= v <= 1.0 for v in each)
    cell = text_scores.get_scorer(name)(predictions, references, sources)
    assert cell == mean_score(each)  # exactly: the cell a result file's scores recompute
    assert math.isclose(cell, 100.0 * math.fsum(each) / len(each), rel_tol=1e-14)


def test_a_document_with_outcomes_is_valid_and_its_cells_recompute():
    document = result_document(ACC, CONTROL, examples=40)
    validate(document)
    assert document["acc_matrix"][2] == [70.0, 90.0] and document["acc_matrix"][1][1] == 35.0
    values = example_values(document["outcomes"]["acc"][2][1], 40)
    assert values is not None and values.sum() == 36
    validate(as_schema_4(document))  # schema 4 (no outcomes) stays readable


def flip_first_bit(document: dict) -> None:
    right = decode_bits(document["outcomes"]["acc"][1][0], 40)
    right[0] = not right[0]
    document["outcomes"]["acc"][1][0] = encode_bits(right)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (flip_first_bit, "acc_matrix row 1 cell 0 is 80.0 but its per-example outcomes give 77.5"),
        (lambda d: d["outcomes"]["control"][2].__setitem__(0, [0.25] * 40), "control_matrix row 2 cell 0 is 50.0 but its per-example outcomes give 25.0"),
        (lambda d: d["outcomes"]["acc"][0].__setitem__(0, [1.5] * 40), "scores must be numbers in [0, 1]"),
        (lambda d: d["outcomes"]["acc"][0].__setitem__(0, [0.0] * 39), "39 scores for 40 examples"),
        (lambda d: d["outcomes"]["acc"][0].__setitem__(0, "AAAA"), "3 bytes for 40 examples"),
        (lambda d: d["outcomes"]["acc"][0].__setitem__(0, 5), "a bitmap (base64 string), a list of scores or null"),
        (lambda d: d["outcomes"]["acc"].pop(), "outcomes.acc must hold 3 rows of 2 cells"),
        (lambda d: d["outcomes"].__setitem__("batch_sizes", [0, 1, 1]), "outcomes.batch_sizes must hold 3 positive integers"),
        (lambda d: d["outcomes"].__setitem__("control_sizes", []), "outcomes.control_sizes must hold 1 positive integers"),
        (lambda d: d["outcomes"].pop("acc"), "'outcomes' must be an object with"),
        (lambda d: d.pop("outcomes"), "required field 'outcomes' is missing"),
    ],
    ids=["bit", "control-scores", "score-range", "score-count", "bitmap-size", "cell-kind", "rows", "batch", "control-sizes", "fields", "missing"],
)
def test_edited_outcomes_are_caught(edit, message):
    document = copy.deepcopy(result_document(ACC, CONTROL, examples=40))
    edit(document)
    with pytest.raises(UserError, match="^r.json: ") as info:
        validate(document, "r.json")
    assert message in str(info.value)
