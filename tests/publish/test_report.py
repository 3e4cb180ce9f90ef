"""`clbench report`: tables of means over seeds with 95% intervals from synthetic result files with known numbers."""

from __future__ import annotations

import io
import json
import re
import statistics

import pandas as pd
import pytest
import scipy.stats
from toys import result_document

from cl_bench.cli import main
from cl_bench.errors import UserError
from cl_bench.files import write_json
from cl_bench.publish.report import collect, render_report, summary_frames, write_plots


def matrix(final_first: float, final_second: float) -> list[list[float]]:
    """Two tasks: learned to 90 and 80, then task 1 ends at `final_first`, task 2 at `final_second`."""
    return [[50.0, 40.0], [90.0, 45.0], [final_first, final_second]]


# method a over three seeds, method b over two; last = mean of the final row
RUNS = {
    ("a", 0): (70.0, 80.0),
    ("a", 1): (74.0, 82.0),
    ("a", 2): (66.0, 78.0),
    ("b", 0): (88.0, 60.0),
    ("b", 1): (86.0, 62.0),
}


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    for (method, seed), finals in RUNS.items():
        write_json(folder / method / f"{seed}.json", result_document(matrix(*finals), [[90.0], [85.0], [72.0 if method == "a" else 81.0]], method=method, seed=seed, trainable=[100, 300], train_seconds=12.0))
    return folder


def test_means_and_sample_stds_match_a_hand_computation(results_dir):
    (table,) = summary_frames(collect([results_dir])).values()
    for method in ("a", "b"):
        lasts = [sum(RUNS[(method, s)]) / 2 for s in range(3) if (method, s) in RUNS]
        forgetting = [90.0 - RUNS[(method, s)][0] for s in range(3) if (method, s) in RUNS]
        assert table.at[method, "seeds"] == len(lasts)
        assert table.at[method, "last"] == pytest.approx(statistics.mean(lasts))
        assert table.at[method, "last_std"] == pytest.approx(statistics.stdev(lasts))  # ddof = 1
        low, high = scipy.stats.t.interval(0.95, len(lasts) - 1, loc=statistics.mean(lasts), scale=scipy.stats.sem(lasts)) if statistics.stdev(lasts) else (statistics.mean(lasts),) * 2
        assert table.at[method, "last_low"] == pytest.approx(low) and table.at[method, "last_high"] == pytest.approx(high)
        assert table.at[method, "forgetting"] == pytest.approx(statistics.mean(forgetting))
        assert table.at[method, "trainable"] == 200 and table.at[method, "train_s"] == pytest.approx(12.0)
    assert table.at["a", "zs_retention"] == pytest.approx(0.8) and table.at["a", "zs_retention_std"] == pytest.approx(0.0)


def test_markdown_marks_the_best_of_each_column_and_the_rows_tied_with_it(results_dir):
    text = render_report(collect([results_dir]), "md", ["last", "forgetting", "plasticity"])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines() if line.startswith("| a ") or line.startswith("| b ")}
    # last: a 75 (seeds 75, 78, 72: std 3, half the interval t_2 x 3 / sqrt(3) = 7.45) against b 74: tied
    assert rows["a"][1] == "**75.00 ± 7.45**" and rows["b"][1] == "**74.00 ± 0.00**"
    # forgetting (smaller is better): b 3 is best; a's 20 is 17 worse, but 2 and 3 seeds cannot tell (+17 ± 18)
    assert rows["b"][2] == "**3.00 ± 12.71**" and rows["a"][2] == "**20.00 ± 9.94**"
    # plasticity: a learns each task to 90 and 80 (85), b to 90 and 60 to 64 (75.5): not tied
    assert rows["a"][3].startswith("**85.00") and not rows["b"][3].startswith("**")
    assert "the best of each column and every row statistically tied with it" in text and "over seeds only" in text


def test_html_is_a_self_contained_page_with_every_row_and_csv_round_trips(results_dir, tmp_path):
    results = collect([results_dir])
    page = render_report(results, "html")
    assert page.startswith("<!DOCTYPE html>") and re.search(r"<td>a\s*</td>", page) and re.search(r"<td>b\s*</td>", page)
    assert "http" not in page and "<script" not in page and "&plusmn;" in page
    frame = pd.read_csv(io.StringIO(render_report(results, "csv")), index_col="method")
    assert frame.at["a", "last"] == pytest.approx(75.0) and frame.at["b", "seeds"] == 2
    latex = render_report(results, "latex", ["last"])
    assert r"\textbf{75.00 $\pm$ 7.45}" in latex


def test_partial_runs_are_left_out_and_a_duplicate_counts_once(results_dir):
    write_json(results_dir / "partial.json", result_document(matrix(1, 1)[:2], [[90.0], [85.0]], status="partial", method="c"))
    write_json(results_dir / "copy-of-a0.json", json.loads((results_dir / "a" / "0.json").read_text()))
    (table,) = summary_frames(collect([results_dir])).values()
    assert list(table.index) == ["a", "b"] and table.at["a", "seeds"] == 3


def test_runs_that_differ_in_hyperparameters_get_their_own_rows(results_dir):
    write_json(results_dir / "lr.json", result_document(matrix(70.0, 80.0), [[90.0], [85.0], [72.0]], method="a", hyperparameters={"lr": 0.5}))
    (table,) = summary_frames(collect([results_dir])).values()
    assert set(table.index) == {"a", "a (lr=0.5)", "b"} and table.at["a", "seeds"] == 3


def test_plots_are_written_as_png(results_dir, tmp_path):
    written = write_plots(collect([results_dir]), tmp_path / "plots")
    assert len(written) == 5 + 1 and all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert (tmp_path / "plots" / "s_accuracy.png").is_file()


def test_cli_report_prints_tables_and_refuses_bad_input_in_one_line(results_dir, tmp_path, capsys):
    assert main(["report", str(results_dir), "--format", "md"]) == 0
    assert "### s (v1, mtil)" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    document = result_document(matrix(70.0, 80.0), [[90.0], [85.0], [72.0]])
    document["metrics"]["last"] = 99.0  # tampered
    write_json(bad, document)
    for args, message in (
        (["report", str(bad)], "bad.json: metric 'last' is 99.0"),
        (["report", str(tmp_path / "nowhere")], "neither a result file nor a folder"),
        (["report", str(results_dir), "--metrics", "lats"], "did you mean 'last'"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no result files"):
        collect([tmp_path / "empty"])


def test_headroom_over_the_reference_row_and_the_spread_against_seed_noise(results_dir, capsys):
    # With b's third seed (finals 84, 64): last per seed a = 75, 78, 72 (mean 75, sd 3), b = 74,
    # 74, 74 (sd 0). Best: a. Against b the paired differences are 1, 4, -2: mean 1.0, a 95%
    # interval of Student's t with 2 degrees of freedom; the means span 1.0 points, against a
    # seed noise of max(3, 0) = 3 (a's).
    write_json(results_dir / "b" / "2.json", result_document(matrix(84.0, 64.0), [[90.0], [85.0], [81.0]], method="b", seed=2, trainable=[100, 300]))
    half = scipy.stats.t.ppf(0.975, 2) * statistics.stdev([1.0, 4.0, -2.0]) / 3**0.5
    text = render_report(collect([results_dir]), "text", ["last"], reference="b")
    assert f"Headroom on last: the best row (a, 75.00) is 1.00 ± {half:.2f} points above the untouched model (b, 74.00)" in text
    assert "the rows' means span 1.00 points (max − min), not larger than the seed noise of 3.00 (the largest standard deviation over seeds, a's)." in text
    assert "Headroom" not in render_report(collect([results_dir]), "text", ["last"])  # no reference, no claim
    assert main(["report", str(results_dir), "--metrics", "last", "--reference", "a"]) == 0
    assert "the best row (a, 75.00) is 0.00 points above the untouched model (a, 75.00)" in capsys.readouterr().out
    with pytest.raises(UserError, match="unknown row for --reference 'bb'; did you mean 'b'"):
        render_report(collect([results_dir]), "text", reference="bb")
