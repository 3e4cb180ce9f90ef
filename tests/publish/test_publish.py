"""`clbench publish`: what the leaderboard admits, what it refuses, and what it generates."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from toys import as_partial, rehash, result_document, snapshot

from cl_bench.cli import main
from cl_bench.files import write_json

ACC = [[50.0, 40.0], [90.0, 45.0], [80.0, 85.0]]
CONTROL = [[90.0], [88.0], [81.0]]


def write(folder, name, **kwargs):
    path = folder / f"{name}.json"
    write_json(path, result_document(ACC, CONTROL, **kwargs))
    return path


@pytest.fixture
def board(tmp_path):
    incoming = tmp_path / "incoming"
    files = [write(incoming, f"{m}{s}", method=m, seed=s) for m in ("alpha", "beta") for s in (0, 1, 2)]
    leaderboard = tmp_path / "leaderboard"
    (tmp_path / "leaderboard").mkdir()
    (leaderboard / "reported.json").write_text(json.dumps([{"method": "MoRAM", "scenario": "X-TAIL", "backbone": "ViT-B/16", "source": "arXiv 2506.21035", "metrics": {"transfer": 63.3, "avg": 72.7, "last": 80.9}}]))
    assert main(["publish", *map(str, files), "--leaderboard", str(leaderboard)]) == 0
    return leaderboard, incoming


def test_publish_copies_results_and_generates_tables_page_and_svg_plots(board):
    leaderboard, _ = board
    copies = sorted((leaderboard / "results" / "s").rglob("*.json"))
    assert [p.parent.name for p in copies] == ["alpha"] * 3 + ["beta"] * 3
    readme = (leaderboard / "README.md").read_text()
    assert "## s (v1, mtil)" in readme and re.search(r"^\| alpha +\| +3 \|", readme, re.M) and re.search(r"^\| beta +\| +3 \|", readme, re.M)
    reported = readme.index("## Reported by the papers")
    assert readme.index("| alpha") < reported and "80.9" in readme[reported:] and "80.9" not in readme[:reported]
    page = (leaderboard / "index.html").read_text()
    assert all(re.search(rf"<td>{m}\s*</td>", page) for m in ("alpha", "beta", "MoRAM"))
    assert "http" not in page and page.count("<script") == 1 and "<script>" in page  # one inline script, no network resources
    plots = sorted(p.name for p in (leaderboard / "plots").iterdir())
    assert plots == ["00-s-accuracy.svg", "00-s-alpha.svg", "00-s-beta.svg"] and all(f"plots/{p}" in page for p in plots)
    assert not list(leaderboard.rglob("*.png"))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["metrics"].__setitem__("last", 99.0), "metric 'last' is 99.0 but the accuracy matrix gives"),
        (as_partial, "a partial run cannot be published"),
        (lambda d: d.update(schema="cl_bench.result/9"), "schema is 'cl_bench.result/9'"),
        (lambda d: rehash(d["scenario"].update(version="2") or d), "s version 2 (mtil) cannot share a table with version 1 (mtil)"),
        (lambda d: d["scenario"].update(protocol="x-tail"), "s version 1 (x-tail) cannot share a table with version 1 (mtil)"),
        (lambda d: None, "the same run (alpha on s, seed 0, same settings) is already in"),
    ],
    ids=["tampered", "partial", "schema", "stream-version", "protocol", "duplicate"],
)
def test_publish_refuses_in_one_line_and_writes_nothing(board, capsys, change, message):
    leaderboard, incoming = board
    document = json.loads((incoming / "alpha0.json").read_text())
    change(document)
    bad = incoming / "bad.json"
    bad.write_text(json.dumps(document))
    fine = write(incoming, "gamma0", method="gamma")  # a good file in the same call is not published either
    before = snapshot(leaderboard)
    capsys.readouterr()
    assert main(["publish", str(fine), str(bad), "--leaderboard", str(leaderboard)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and message in err[0], err
    assert snapshot(leaderboard) == before


def test_the_same_run_twice_in_one_call_is_refused(tmp_path, capsys):
    first = write(tmp_path / "a", "x", method="alpha")
    second = write(tmp_path / "b", "x", method="alpha")
    assert main(["publish", str(first), str(second), "--leaderboard", str(tmp_path / "lb")]) == 2
    assert "already in" in capsys.readouterr().err and not (tmp_path / "lb").exists()


MARKUP = "<script>alert(1)</script>|x\n## injected](javascript:alert(1)) <img src=x onerror=alert(1)> `c` *e* [l](javascript:x) &amp; $x$ \\|"


def test_text_from_result_files_never_becomes_markdown_markup(tmp_path):
    """Values from result files and reported.json reach README.md as text: a real Markdown parser
    finds exactly our tables, headings, images and links, and the cells read back the raw values."""
    import html

    from markdown_it import MarkdownIt

    files = []
    for note in ("plain", MARKUP):  # two variants of one method: their labels show the value
        for seed in (0, 1):
            document = result_document(ACC, CONTROL, method="alpha", seed=seed, hyperparameters={"note": note})
            document["scenario"]["params"] = {"order": MARKUP}
            rehash(document)
            path = tmp_path / f"{len(files)}.json"
            path.write_text(json.dumps(document))
            files.append(str(path))
    board = tmp_path / "lb"
    board.mkdir()
    (board / "reported.json").write_text(json.dumps([{"method": MARKUP, "scenario": "s|x", "backbone": "b", "source": MARKUP, "metrics": {"last": 1.0}}]))
    assert main(["publish", *files, "--leaderboard", str(board)]) == 0
    page = MarkdownIt("commonmark").enable("table").render((board / "README.md").read_text())
    assert "<script" not in page and "javascript:" not in re.sub(r">[^<]*<", "><", page)  # in no tag or attribute
    assert re.findall(r"<img [^>]*>", page) == ['<img src="plots/00-s-accuracy.svg" alt="accuracy over tasks" />']
    assert re.findall(r'href="([^"]*)"', page) == ["plots/00-s-alpha.svg", "plots/00-s-alpha-2.svg", "configs/00-s-alpha.json", "configs/00-s-alpha-2.json"]
    assert len(re.findall(r"<h2>", page)) == 2 and len(re.findall(r"<table>", page)) == 3  # ours, paired differences, reported
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>", page, flags=re.S)
    shown = MARKUP.replace("\n", " ")
    assert [html.unescape(r) for r in rows] == [f"alpha (note={shown})", "alpha (note=plain)"] * 2 + [shown]
    assert all(len(re.findall(r"<td>", row)) == 12 for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)[1:3])
    heading = html.unescape(re.search(r"<h2>(.*?)</h2>", page).group(1))
    assert heading == f"s (v1, mtil, order={shown})"


def test_latex_and_text_reports_escape_names(tmp_path):
    from cl_bench.publish.report import render_report

    documents = [result_document(ACC, CONTROL, method="alpha", seed=s, hyperparameters={"note": n}) for n in ("a_b {x} 50% \\cmd", "plain") for s in (0, 1)]
    latex = render_report(documents, "latex")
    assert r"alpha (note=a\_b \{x\} 50\% \textbackslash{}cmd)" in latex and r"zs\_retention" in latex
    text = render_report([{**d, "scenario": {**d["scenario"], "params": {"o": "a\nb"}}} for d in documents], "text")
    assert "o=a b)" in text and "\na" not in text.replace("\nalpha", "")


HOSTILE = '<script>alert(1)</script></textarea><textarea>| a | b |\n<img src=x onerror=alert(1)> "q" \'s\' &amp;'


class _Tags(HTMLParser):
    """Every tag of a page, and its text as a browser reads it (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        self.tags.append(f"/{tag}")

    def handle_data(self, data):
        self.text += data


def test_a_hostile_name_from_a_result_file_is_text_in_every_page(tmp_path):
    """`<script>`, `</textarea>` and Markdown pipes in a result file's settings, stream parameters
    and reported.json reach index.html, README.md and `report --format html` as text only."""
    from markdown_it import MarkdownIt

    from cl_bench.publish.report import render_report

    documents, files = [], []
    for note in ("plain", HOSTILE):
        for seed in (0, 1):
            document = result_document(ACC, CONTROL, method="alpha", seed=seed, hyperparameters={"note": note})
            document["scenario"]["params"] = {"order": HOSTILE}
            rehash(document)
            documents.append(document)
            files.append(tmp_path / "in" / f"{len(files)}.json")
            write_json(files[-1], document)
    board = tmp_path / "lb"
    board.mkdir()
    (board / "reported.json").write_text(json.dumps([{"method": HOSTILE, "scenario": HOSTILE, "backbone": "b", "source": HOSTILE, "protocol": "mtil", "metrics": {"last": 1.0}}]))
    assert main(["publish", *map(str, files), "--leaderboard", str(board)]) == 0
    shown = HOSTILE.replace("\n", " ")
    pages = {"index.html": ((board / "index.html").read_text(), 1), "report": (render_report(documents, "html"), 0)}
    for name, (page, scripts) in pages.items():
        parser = _Tags()
        parser.feed(page)
        assert parser.tags.count("script") == scripts and "textarea" not in parser.tags and "/textarea" not in parser.tags, name
        assert parser.tags.count("img") == (1 if name == "index.html" else 0), name  # only the accuracy curve
        assert f"alpha (note={shown})" in parser.text and f"order={shown})" in parser.text, name
    assert parser.text.count(shown) == 2  # the report: the stream's title and the row
    readme = MarkdownIt("commonmark").enable("table").render((board / "README.md").read_text())
    parser = _Tags()
    parser.feed(readme)
    assert not {"script", "textarea", "/textarea"} & set(parser.tags) and parser.tags.count("img") == 1
    assert f"alpha (note={shown})" in parser.text and f"order={shown})" in parser.text and parser.text.count(shown) == 10  # heading, row, its paired differences' row, 3 reported cells, 2 links, the proxy sentence's table and source
    rows = re.findall(r"<tr>(.*?)</tr>", readme, flags=re.S)
    assert [len(re.findall(r"<t[dh][ >]", row)) for row in rows] == [12, 12, 12, 8, 8, 8, 5, 5]  # the pipes added no cell
