"""`reported.json`: the optional `note` beside a paper's numbers (a caveat about them)."""

from __future__ import annotations

import json

import pytest

from cl_bench.errors import UserError
from cl_bench.publish.pages import read_reported, reported_table

ENTRY = {"method": "LwF", "scenario": "X-TAIL (order I)", "protocol": "x-tail", "backbone": "CLIP ViT-B/16", "source": "a page", "metrics": {"last": 64.0}}


def test_a_note_is_read_and_shown_in_its_own_column_only_when_an_entry_has_one(tmp_path):
    noted = {**ENTRY, "note": "Last row equals iCaRL's | likely a copy error"}
    (tmp_path / "reported.json").write_text(json.dumps([noted, {**ENTRY, "method": "ZSCL"}]))
    entries = read_reported(tmp_path)
    assert entries[0]["note"] == noted["note"] and "note" not in entries[1]
    for fmt in ("md", "html"):
        table = reported_table(entries, fmt)
        assert "note" in table and "likely a copy error" in table and "ZSCL" in table
    assert "Last row equals iCaRL's \\| likely" in reported_table(entries, "md")  # escaped like the other text cells
    assert "note" not in reported_table([{**ENTRY, "method": "ZSCL"}], "md")


@pytest.mark.parametrize("note", [3, None, ["a"]])
def test_a_note_that_is_not_a_string_is_a_one_line_error(tmp_path, note):
    (tmp_path / "reported.json").write_text(json.dumps([{**ENTRY, "note": note}]))
    with pytest.raises(UserError, match="entry 0: 'note' must be a string") as info:
        read_reported(tmp_path)
    assert "\n" not in str(info.value)
