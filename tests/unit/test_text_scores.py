"""TRACE's scorers against cases worked out by hand (see cl_bench/blocks/text_scores.py for their sources)."""

import pytest

from cl_bench import UserError
from cl_bench.blocks import text_scores as ts
from cl_bench.scenarios.trace_tasks import TRACE_TASKS

pytestmark = pytest.mark.unit


def test_accuracy_is_a_match_of_the_prediction_cut_to_the_reference_length():
    # " A. support" strips and cuts to "A": a hit; "B" misses; an empty answer scores 0 but counts
    assert ts.accuracy([" A. support", "B", ""], ["A", "A", "A"]) == pytest.approx(100 / 3)
    assert ts.accuracy(["12"], ["123"]) == 0.0  # a cut prediction shorter than the reference cannot match


def test_first_char_compares_the_first_characters_as_scienceqa_does():
    assert ts.first_char(["B\nBecause it melts", "  C", ""], ["B\nThe ice melts", "A\nno", "A"]) == pytest.approx(100 / 3)


def test_number_compares_the_last_number_of_the_prediction():
    assert ts.last_number("The answer is 1,200.5 apples") == 1200.5 and ts.last_number("no digits") is None
    assert ts.number(["The answer is 1,200.5 apples", "3 then 4", "none", "-2"], ["1200.5", "4", "4", "-2.0"]) == 75.0


def test_rouge_l_is_the_rouge_packages_f_measure():
    # The package's summary-level ROUGE-L counts distinct words: the union LCS of "cat sat" with
    # "the cat sat on" is {cat, sat}: P = 2/2, R = 2/4, F = 2PR / (P + R) = 2/3.
    assert ts.rouge_l(["cat sat"], ["the cat sat on"]) == pytest.approx(200 / 3, abs=1e-5)
    # LCS words {the, cat, on, mat} of 5 distinct words each side: P = R = F = 0.8; an empty answer adds 0
    assert ts.rouge_l(["the cat sat on the mat", ""], ["the cat was on the mat", "x"]) == pytest.approx(40.0, abs=1e-5)


def test_fuzzy_is_the_rounded_indel_ratio_after_py150_literals():
    # Indel distance of abcd / abce is 2 over 8 characters: 100 (1 - 2/8) = 75; abc / abd: 66.7 -> 67
    assert ts.fuzzy(["abcd", "abc"], ["abce", "abd"]) == pytest.approx((75 + 67) / 2)
    assert ts.fuzzy(["x = <NUM_LIT>", 'print(<STR_LIT:hi>)'], ["x = 0", "print(hi)"]) == 100.0


def test_sari_of_a_copied_source_worked_out_by_hand():
    # source "a b", output "a b" (a copy), reference "a c":
    # keep: n=1 P = (1 + 0)/2, R = 1 -> F 2/3; n=2 P = 0 -> 0; n=3,4 nothing to keep -> 1. mean 2/3
    # delete: nothing deleted -> precision 1 for every n. add: nothing added but "c" was needed -> 0, 0, 1, 1: mean 1/2
    # SARI = (2/3 + 1 + 1/2) / 3 = 13/18
    assert ts.sari_sentence("a b", "a b", ["a c"]) == pytest.approx(13 / 18)
    assert ts.sari(["A b"], ["a c"], ["a B"]) == pytest.approx(1300 / 18)  # lower-cased first
    assert ts.sari(["a c"], ["a c"], ["a b"]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="needs the source"):
        ts.sari(["a"], ["a"], None)


def test_unknown_scorers_are_named_with_a_suggestion():
    assert ts.get_scorer("rouge-l") is ts.rouge_l
    with pytest.raises(UserError, match="did you mean 'rouge-l'"):
        ts.get_scorer("rougel")


def test_the_trace_table_keeps_the_official_order_scorers_and_epochs():
    assert [t.name for t in TRACE_TASKS] == ["C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten"]
    assert [t.epochs for t in TRACE_TASKS] == [2, 1, 3, 2, 1, 2, 2, 3]
    assert [t.scorer for t in TRACE_TASKS] == ["accuracy", "accuracy", "rouge-l", "fuzzy", "first-char", "number", "number", "sari"]
    assert all(t.scorer in ts.SCORERS for t in TRACE_TASKS)


def test_rouge_l_scores_a_thousand_word_sentence_as_the_package_does_with_room():
    import sys

    reference = " ".join(f"w{i % 97}" for i in range(1000))  # one MeetingBank-like sentence
    prediction = " ".join(f"w{i % 89}" for i in range(900))
    limit = sys.getrecursionlimit()
    score = ts.rouge_l([prediction], [reference])
    assert 0 < score < 100 and sys.getrecursionlimit() == limit  # scored, and the limit put back
    # The same value as the package gives when it has the room itself.
    from rouge import Rouge

    sys.setrecursionlimit(10_000)
    try:
        expected = 100 * Rouge(metrics=["rouge-l"]).get_scores(prediction + "\n", reference, avg=True)["rouge-l"]["f"]
    finally:
        sys.setrecursionlimit(limit)
    assert score == pytest.approx(expected, abs=1e-9)
