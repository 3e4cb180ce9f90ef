"""TRACE's scorers against cases worked out by hand (see cl_bench/blocks/text_scores.py for their sources)."""

import pytest

from cl_bench import UserError
from cl_bench.blocks import math_answers as ma
from cl_bench.blocks import text_scores as ts
from cl_bench.scenarios.trace_tasks import SCORERS, SETTINGS, TRACE_TASKS

pytestmark = pytest.mark.unit


def test_accuracy_is_a_match_of_the_prediction_cut_to_the_reference_length():
    # " A. support" strips and cuts to "A": a hit; "B" misses; an empty answer scores 0 but counts
    assert ts.accuracy([" A. support", "B", ""], ["A", "A", "A"]) == pytest.approx(100 / 3)
    assert ts.accuracy(["12"], ["123"]) == 0.0  # a cut prediction shorter than the reference cannot match


def test_first_char_compares_the_first_characters_as_scienceqa_does():
    assert ts.first_char(["B\nBecause it melts", "  C", ""], ["B\nThe ice melts", "A\nno", "A"]) == pytest.approx(100 / 3)


def test_number_compares_the_last_number_of_the_prediction():
    # ours, neither TRACE code's
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


def test_fuzzy_rounds_half_to_even_as_fuzzywuzzy_does():
    # 5 common characters of 8 + 8: 100 * 10/16 = 62.5, and fuzzywuzzy's int(round(62.5)) is 62 (half to
    # even), not 63; 1 of 8 + 8: 12.5 -> 12. Equal strings are 100, an empty side is skipped but counted.
    assert ts.fuzzy(["abcdeXYZ"], ["abcdeUVW"]) == 62.0 and ts.fuzzy_difflib(["abcdeXYZ"], ["abcdeUVW"]) == 62.0
    assert ts.fuzzy(["aXYZWVUT"], ["aBCDEFGH"]) == 12.0
    assert ts.fuzzy(["same", ""], ["same", "x"]) == 50.0


def test_the_two_fuzzy_backends_differ_as_fuzzywuzzy_with_and_without_python_levenshtein():
    # Indel (python-Levenshtein, rapidfuzz): the longest common subsequence "ab" of bab / acb: 100 * 4/6 = 67.
    # difflib (fuzzywuzzy alone, TRACE's requirements): the longest block "b" first, then nothing
    # matches on either side of it: 100 * 2/6 = 33.
    assert ts.fuzzy(["bab"], ["acb"]) == 67.0 and ts.fuzzy_difflib(["bab"], ["acb"]) == 33.0
    # difflib's order matters (the prediction first, as TRACE calls fuzz.ratio): for acb / bab the
    # earliest block of the prediction is "a" (a[0] = b[1]), then "b" after it: 100 * 4/6 = 67
    assert ts.fuzzy_difflib(["acb"], ["bab"]) == 67.0 and ts.fuzzy(["acb"], ["bab"]) == 67.0


def test_choice_takes_the_answer_letter_as_moram_does_then_scores_accuracy():
    # MoRAM's postprocess_predictions: the first A/B/C standing alone (either case) ...
    assert [ts.choice_letter(t) for t in ["B", "the answer is b.", "C) none", "(B)", "  c  "]] == ["B", "B", "C", "B", "C"]
    # ... so the article "a" counts as A ...
    assert ts.choice_letter("this is a hawkish stance") == "A"
    # ... else the first character that is one of them, even inside a word ("stance" gives A), or
    # after a CJK character (no word boundary between 选 and B) ...
    assert [ts.choice_letter(t) for t in ["the stance", "选B", "AB"]] == ["A", "B", "A"]
    # ... else the text unchanged, which cannot match
    assert ts.choice_letter(" none ") == "none"
    assert ts.choice(["I think B.", "none", "a", "c"], ["B", "C", "A", "B"]) == 50.0
    assert ts.accuracy(["I think B.", "none", "a", "c"], ["B", "C", "A", "B"]) == 0.0  # without the extraction


def test_the_original_trace_codes_exact_match_and_first_character_are_not_stripped():
    assert ts.exact(["A", " A", "A.", "", "7"], ["A", "A", "A", "A", "7"]) == 40.0
    assert ts.first_char_raw(["B\nBecause", " B", ""], ["B\nThe ice", "B\nno", "A"]) == pytest.approx(100 / 3)
    assert ts.first_char([" B"], ["B\nno"]) == 100.0  # MoRAM's strips first


def test_qwen_math_matches_numglue_answers_as_moram_s_parser():
    hits = {
        "The answer is \\boxed{6}": True,  # the boxed answer first
        "\\boxed{6}$ and 7": True,  # not the last number when a box is there
        "6 apples": True,  # else the last number
        "I think 5 then 600": True,  # 600 = 6 x 100
        "0.06": True,  # 6 / 100
        "6.00004": True,  # relative 1e-4
        "6.01": False,
        "-6": False,
        "\\boxed{x = 6}": True,  # "x =" dropped by the normalisation
        "\\boxed{2+4}": True,  # plain arithmetic, evaluated exactly
        "\\boxed{(12/2)}": True,
        "\\boxed{\\frac{12}{2}}": False,  # LaTeX needs antlr4, which MoRAM's environment lacks
        "\\boxed{sqrt(36)}": False,  # names are not evaluated here (parse_expr would eval them)
        "six": False,  # no word2number in MoRAM's environment
        "no idea": False,
        "": False,
    }
    for prediction, hit in hits.items():
        assert ma.is_correct(prediction, "6") is hit, prediction
    assert ma.is_correct("1,250", "1250") is False  # the last-number regex stops at a comma: "250"
    assert ma.is_correct("\\boxed{1,250}", "1250") is True  # a boxed number keeps it: commas dropped
    assert ma.is_correct("\\boxed{50\\%}", "0.5") is True  # 50 = 0.5 x 100
    assert ts.qwen_math(["6", "7", "\\boxed{6}"], ["6", "6", "6"]) == pytest.approx(200 / 3)
    assert ts.number(["The answer is 1,200.5 apples"], ["1200.5"]) == 100.0  # ours differs: commas allowed


def test_qwen_math_never_runs_text_as_code_and_bounds_arithmetic():
    assert ma.is_correct("__import__('os').getcwd()", "6") is False  # no digit: compared as text, never evaluated
    assert ma._arithmetic("__import__('os')") is None and ma._arithmetic("(2+4)*3/9") == 2
    assert ma._arithmetic("9**64**64**64") is None  # would take forever
    assert ma.is_correct("\\boxed{9**64**64**64}", "6") is False


def test_qwen_math_normalisation_steps():
    assert ma.strip_string("\\dfrac12") == "\\frac{1}{2}" and ma.strip_string("1/2") == "\\frac{1}{2}"
    assert ma.strip_string("6 \\text{apples}") == "6" and ma.strip_string("$6.00$") == "6" and ma.strip_string("k = 5") == "5"
    assert ma.find_box("so \\boxed{\\frac{1}{2}} or \\boxed{3}") == "3" and ma.find_box("\\boxed{a{b}c}d") == "a{b}c"


def test_rouge_l_trace_passes_the_reference_as_the_hypothesis_without_a_newline():
    from rouge import Rouge

    prediction, reference = "the council voted. the park opens in may.", "the park opens. the council voted in may."
    package = Rouge(metrics=["rouge-l"])
    assert ts.rouge_l_trace([prediction], [reference]) == pytest.approx(100 * package.get_scores(reference, prediction, avg=True)["rouge-l"]["f"])
    assert ts.rouge_l([prediction], [reference]) == pytest.approx(100 * package.get_scores(prediction + "\n", reference, avg=True)["rouge-l"]["f"])
    # summary-level ROUGE-L is not symmetric over several sentences: the two settings differ here
    assert abs(ts.rouge_l_trace([prediction], [reference]) - ts.rouge_l([prediction], [reference])) > 1


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
    assert [t.scorer("moram") for t in TRACE_TASKS] == ["choice", "choice", "rouge-l", "fuzzy", "first-char", "qwen-math", "qwen-math", "sari"]
    assert [t.scorer("trace") for t in TRACE_TASKS] == ["exact", "exact", "rouge-l-trace", "fuzzy-difflib", "first-char-raw", "exact", "exact", "sari"]
    assert [t.name for t in TRACE_TASKS if t.long_prompt] == ["MeetingBank"]
    assert all(name in ts.SCORERS for setting in SETTINGS for name in SCORERS[setting].values())


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
