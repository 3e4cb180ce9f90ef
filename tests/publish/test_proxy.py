"""Proxy validity: Kendall's tau between our ranking and a published table's, over the methods both have."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats
from toys import result_document

from cl_bench.cli import main
from cl_bench.files import write_json
from cl_bench.publish.proxy import kendall, proxy_ranks


def entries(pairs: dict[str, float], ours: dict[str, str]) -> list[dict]:
    return [
        {
            "method": name,
            "scenario": "X-TAIL (order I)",
            "backbone": "ViT-B/16",
            "source": "a paper",
            "protocol": "x-tail",
            "metrics": {"last": value},
            **({"cl_bench_method": ours[name]} if name in ours else {}),
        }
        for name, value in pairs.items()
    ]


def test_tau_over_the_methods_in_common_with_its_exact_p_value():
    table = pd.DataFrame({"last": [70.0, 60.0, 75.0, 50.0]}, index=["moram", "seq-lora", "moe-lora", "zeroshot"])
    reported = entries(
        {"MoRAM": 80.9, "Fine-tuning": 40.0, "MoE-Adapter": 70.5, "Zero-shot": 65.0, "CoDyRA": 79.2}, {"MoRAM": "moram", "Fine-tuning": "seq-lora", "MoE-Adapter": "moe-lora", "Zero-shot": "zeroshot"}
    )
    (rank,) = proxy_ranks(table, reported)
    assert rank.common == 4 and rank.metric == "last"  # CoDyRA has no cl_bench_method: left out
    ours, theirs = [70.0, 60.0, 75.0, 50.0], [80.9, 40.0, 70.5, 65.0]
    expected = stats.kendalltau(ours, theirs)
    assert rank.tau == pytest.approx(expected.statistic) and rank.p_value == pytest.approx(expected.pvalue)
    assert rank.low is None and "4 methods in common (moram as MoRAM" in rank.sentence() and "no 95% interval (fewer than 5 methods" in rank.sentence()


def test_below_three_methods_there_is_no_tau_and_the_page_says_so():
    table = pd.DataFrame({"last": [70.0, 60.0]}, index=["moram", "seq-lora"])
    (rank,) = proxy_ranks(table, entries({"MoRAM": 80.9, "Fine-tuning": 40.0}, {"MoRAM": "moram", "Fine-tuning": "seq-lora"}))
    assert rank.tau is None and "2 methods in common" in rank.sentence() and "too few methods in common" in rank.sentence()


def test_a_table_that_reports_several_backbones_is_one_ranking_per_backbone():
    # TRACE's table has its rows on three language models: never one ranking holding each method thrice
    table = pd.DataFrame({"op": [44.0, 30.0, 40.0]}, index=["moram", "seq-lora", "ewc"])
    names = {"MoRAM": "moram", "SeqLoRA": "seq-lora", "EWC": "ewc"}
    reported = []
    for backbone, values in (("LLaMA-2-7B-Chat", {"MoRAM": 44.5, "SeqLoRA": 34.3, "EWC": 42.4}), ("Gemma-2B-it", {"MoRAM": 35.0, "SeqLoRA": 30.0, "EWC": 28.4})):
        reported += [
            {"method": name, "scenario": "TRACE", "backbone": backbone, "source": "a page", "protocol": "instruct", "metrics": {"op": value}, "cl_bench_method": names[name]}
            for name, value in values.items()
        ]
    ranks = proxy_ranks(table, reported)
    assert [rank.table for rank in ranks] == ["TRACE, LLaMA-2-7B-Chat", "TRACE, Gemma-2B-it"]
    assert all(rank.common == 3 and rank.metric == "op" for rank in ranks)
    assert ranks[0].tau == pytest.approx(1.0) and ranks[1].tau == pytest.approx(stats.kendalltau([44.0, 30.0, 40.0], [35.0, 30.0, 28.4]).statistic)


def test_the_fieller_hartley_pearson_interval_from_five_methods():
    ours, theirs = [1.0, 2.0, 3.0, 5.0, 4.0, 6.0], [1.0, 3.0, 2.0, 4.0, 5.0, 6.0]
    tau, p_value, low, high = kendall(ours, theirs)
    half = stats.norm.ppf(0.975) * math.sqrt(0.437 / (6 - 4))
    assert low == pytest.approx(math.tanh(math.atanh(tau) - half)) and high == pytest.approx(math.tanh(math.atanh(tau) + half)) and low < tau < high
    assert kendall([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])[2:] == (None, None)  # tau = 1: no interval


def test_the_leaderboard_shows_the_comparison_under_the_papers_table(tmp_path):
    files = []
    for method, last in (("alpha", 70.0), ("beta", 80.0), ("gamma", 60.0)):
        for seed in (0, 1):
            path = tmp_path / "in" / f"{method}{seed}.json"
            write_json(path, result_document([[50.0, 40.0], [90.0, 45.0], [last + seed, last]], [[90.0], [88.0], [81.0]], method=method, seed=seed, protocol="x-tail"))
            files.append(str(path))
    board = tmp_path / "lb"
    board.mkdir()
    reported = entries({"Alpha": 1.0, "Beta": 3.0, "Gamma": 2.0}, {"Alpha": "alpha", "Beta": "beta", "Gamma": "gamma"})
    (board / "reported.json").write_text(json.dumps(reported))
    assert main(["publish", *files, "--leaderboard", str(board)]) == 0
    readme = (board / "README.md").read_text()
    assert "Proxy validity against the table X-TAIL (order I), from a paper: 3 methods in common (alpha as Alpha, beta as Beta, gamma as Gamma). Kendall's tau of last" in readme
    assert readme.index("| Gamma") < readme.index("Proxy validity") and "Proxy validity against" in (board / "index.html").read_text()
