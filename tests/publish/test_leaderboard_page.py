"""leaderboard/index.html as a page people use: links that resolve, sortable columns, a filter.

The static checks run everywhere. The browser checks drive Debian's `chromium` through
`chromium-driver` and selenium (`.ci/run` installs both); where no browser is installed they are
skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from toys import result_document

from cl_bench.cli import main
from cl_bench.files import write_json

# Two tasks; `last` per method differs so that sorting has an order to find.
LAST = {"alpha": 70.0, "beta": 90.0, "gamma": 50.0}


def _result(method: str, seed: int, scenario: str, protocol: str, backbone: str = "b", hyperparameters: dict | None = None) -> dict:
    acc = [[50.0, 40.0], [90.0, 45.0], [LAST[method] + seed, 85.0]]
    return result_document(acc, [[90.0], [88.0], [81.0]], method=method, seed=seed, scenario=scenario, protocol=protocol, backbone=backbone, hyperparameters=hyperparameters)


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("page")
    files = []
    for scenario, protocol in (("mt", "mtil"), ("ci", "class-il")):
        for method, backbone in (("alpha", "b"), ("beta", "b"), ("gamma", "b2")):
            for seed in (0, 1):
                path = folder / "in" / f"{scenario}-{method}-{seed}.json"
                write_json(path, _result(method, seed, scenario, protocol, backbone))
                files.append(str(path))
    leaderboard = folder / "lb"
    leaderboard.mkdir()
    reported = [
        {"method": "PaperNet", "scenario": "MTIL (order I)", "backbone": "CLIP ViT-B/16", "source": "a paper", "protocol": "mtil", "metrics": {"last": 12.3}},
        {"method": "Elsewhere", "scenario": "other", "backbone": "x", "source": "another", "metrics": {"last": 45.6}},
    ]
    (leaderboard / "reported.json").write_text(json.dumps(reported))
    assert main(["publish", *files, "--leaderboard", str(leaderboard)]) == 0
    return leaderboard


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.targets += [value for name, value in attrs if name in ("href", "src") and value]


def test_every_link_of_both_pages_is_a_file_of_the_folder(board):
    page = (board / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    markdown_links = re.findall(r"\]\(([^)]+)\)", (board / "README.md").read_text())
    targets = parser.targets + markdown_links
    assert len([t for t in parser.targets if t.startswith("results/")]) == 12  # every seed of every row
    assert {t.split("/")[0] for t in targets} == {"results", "configs", "plots"}
    for target in targets:
        assert not urlparse(target).scheme and (board / unquote(target)).is_file(), target
    assert "http" not in page and not re.search(r"<(script|link|img)[^>]+src=\"?[a-z]+:", page)


def test_row_labels_name_only_what_differs_within_their_table(tmp_path):
    """alpha runs with note x on one stream, and with notes y and z (and another rank) on the other:
    the first table's row is plain alpha, the second's name the note alone; each row's config keeps
    all its settings."""
    files = []
    for scenario, protocol, note in (("mt", "mtil", "x"), ("ci", "class-il", "y"), ("ci", "class-il", "z")):
        document = _result("alpha", 0, scenario, protocol, hyperparameters={"note": note, "rank": 4})
        write_json(tmp_path / f"{scenario}-{note}.json", document)
        files.append(str(tmp_path / f"{scenario}-{note}.json"))
    assert main(["publish", *files, "--leaderboard", str(tmp_path / "lb")]) == 0
    readme = (tmp_path / "lb" / "README.md").read_text()
    ci, mt = readme.index("## ci (v1, class-il)"), readme.index("## mt (v1, mtil)")
    assert re.search(r"^\| alpha +\|", readme[mt:], re.M) and "note=" not in readme[mt:]
    assert "| alpha (note=y) " in readme[ci:mt] and "| alpha (note=z) " in readme[ci:mt] and "rank=" not in readme
    assert "[alpha (note=y)](configs/00-ci-alpha.json)" in readme and "[alpha](configs/01-mt-alpha.json)" in readme
    assert json.loads((tmp_path / "lb" / "configs" / "00-ci-alpha-2.json").read_text())["method_params"] == {"note": "z", "rank": 4}
    assert json.loads((tmp_path / "lb" / "configs" / "01-mt-alpha.json").read_text())["method_params"] == {"note": "x", "rank": 4}


def test_a_row_config_repeats_the_row(board):
    config = json.loads((board / "configs" / "00-ci-gamma.json").read_text())
    from cl_bench import RunConfig
    from cl_bench.results.schema import run_settings

    settings = run_settings(_result("gamma", 0, "ci", "class-il", "b2"))  # schema 4: the resolved values
    assert config == {k: v for k, v in settings.items() if k not in RunConfig.EXECUTION_FIELDS} and config["method"] == "gamma"


def test_reported_numbers_sit_beside_the_streams_of_their_protocol(board):
    readme = (board / "README.md").read_text()
    mtil, class_il, rest = readme.index("## mt (v1, mtil)"), readme.index("## ci (v1, class-il)"), readme.index("## Reported by the papers")
    assert class_il < mtil < readme.index("PaperNet") < rest < readme.index("Elsewhere")
    assert "PaperNet" not in readme[class_il:mtil] and readme.count("PaperNet") == 1
    assert "average incremental accuracy" in readme[class_il:mtil] and "average incremental accuracy" not in readme[mtil:]


def test_settings_name_the_untouched_row_each_stream_states_its_headroom_over(tmp_path):
    files = []
    for method in ("alpha", "beta"):
        for seed in (0, 1, 2):
            files.append(tmp_path / "in" / f"{method}-{seed}.json")
            write_json(files[-1], _result(method, seed, "mt", "mtil"))
    board = tmp_path / "lb"
    board.mkdir()
    (board / "settings.json").write_text(json.dumps({"reference": "alpha"}))
    assert main(["publish", *map(str, files), "--leaderboard", str(board)]) == 0
    # last = (LAST + seed + 85) / 2: beta 87.5 + seed / 2, alpha 77.5 + seed / 2; paired: 10 every seed
    line = "Headroom on last: the best row (beta, 88.00) is 10.00 ± 0.00 points above the untouched model (alpha, 78.00)"
    assert line in (board / "README.md").read_text() and line in (board / "index.html").read_text()
    assert "span 10.00 points (max − min), larger than the seed noise of 0.50 (the largest standard deviation over seeds, alpha's)." in (board / "README.md").read_text()
    before = (board / "README.md").read_bytes()
    from cl_bench.errors import UserError
    from cl_bench.publish.pages import regenerate

    for bad, says in (("[1]", "it must hold an object"), ('{"reference": 3}', "'reference' must be a row label"), ('{"ref": "a"}', "it must hold an object"), ("{", "not valid JSON")):
        (board / "settings.json").write_text(bad)
        with pytest.raises(UserError, match=re.escape(f"settings.json: {says}")):
            regenerate(board)
        assert (board / "README.md").read_bytes() == before  # nothing half-written


# ---------------------------------------------------------------------------------- in a browser


def _browser_or_skip():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium never looks for drivers on the network
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture(scope="module")
def browser(board):
    driver = _browser_or_skip()
    driver.get((board / "index.html").as_uri())
    yield driver
    driver.quit()


def _rows(section):
    from selenium.webdriver.common.by import By

    return [row for row in section.find_elements(By.CSS_SELECTOR, "table.board tbody tr")]


def _column(section, name):
    from selenium.webdriver.common.by import By

    headers = section.find_elements(By.CSS_SELECTOR, "table.board thead th")
    return [h.text.strip().rstrip("▲▼ ").strip() for h in headers].index(name), headers


@pytest.mark.browser
def test_the_page_loads_without_console_errors_and_every_image_and_link_resolves(browser, board):
    from selenium.webdriver.common.by import By

    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    assert browser.find_element(By.ID, "filters").is_displayed()  # the script ran
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images)
    links = [a.get_attribute("href") for a in browser.find_elements(By.TAG_NAME, "a")]
    assert len(links) == 12 + 2 * 3 * 2  # per row: its seeds' results, its config, its matrix plot
    assert all(Path(unquote(urlparse(link).path)).is_file() and Path(unquote(urlparse(link).path)).is_relative_to(board.resolve()) for link in links)


@pytest.mark.browser
def test_clicking_a_column_name_sorts_the_rows(browser):
    from selenium.webdriver.common.by import By

    section = browser.find_element(By.CSS_SELECTOR, 'section[data-protocol="mtil"]')
    index, headers = _column(section, "last")

    def order():
        return [row.find_elements(By.TAG_NAME, "td")[0].text for row in _rows(section)]

    assert order() == ["alpha", "beta", "gamma"]  # as generated: by name
    headers[index].click()
    assert order() == ["gamma", "alpha", "beta"]  # last 50.5, 70.5, 90.5
    assert headers[index].get_attribute("aria-sort") == "ascending"
    headers[index].click()
    assert order() == ["beta", "alpha", "gamma"] and headers[index].get_attribute("aria-sort") == "descending"
    method_index, _ = _column(section, "method")
    headers[method_index].click()
    assert order() == ["alpha", "beta", "gamma"]


@pytest.mark.browser
def test_the_filter_hides_rows_and_streams(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sections = {s.get_attribute("data-protocol"): s for s in browser.find_elements(By.CSS_SELECTOR, "section.stream")}
    backbone, protocol = Select(browser.find_element(By.ID, "backbone-filter")), Select(browser.find_element(By.ID, "protocol-filter"))
    assert [o.text for o in backbone.options] == ["all", "b", "b2"] and sorted(o.text for o in protocol.options) == ["all", "class-il", "mtil"]
    backbone.select_by_visible_text("b2")
    for section in sections.values():
        shown = [row.find_elements(By.TAG_NAME, "td")[0].text for row in _rows(section) if row.is_displayed()]
        assert shown == ["gamma"]
    protocol.select_by_visible_text("class-il")
    assert sections["class-il"].is_displayed() and not sections["mtil"].is_displayed()
    backbone.select_by_visible_text("all")
    protocol.select_by_visible_text("all")
    assert all(s.is_displayed() for s in sections.values()) and all(row.is_displayed() for s in sections.values() for row in _rows(s))
