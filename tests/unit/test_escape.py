"""Text from result files reaches a terminal or a page inert, whatever characters it holds."""

from __future__ import annotations

import pytest

from cl_bench import escape
from cl_bench.errors import one_line

HOSTILE = "a\x1b[31mred\x9b2Jx\u202eevil\u2066iso\u2069\u200fz\nnext\x7f"


def test_one_line_turns_terminal_and_bidirectional_controls_into_spaces():
    cleaned = one_line(HOSTILE)
    assert cleaned == "a [31mred 2Jx evil iso  z next "
    assert all(ord(c) >= 32 and not 127 <= ord(c) <= 159 for c in cleaned)


@pytest.mark.parametrize("fmt", ["text", "md", "html", "latex"])
def test_every_escaper_leaves_no_control_character(fmt):
    out = escape.for_format(fmt)(HOSTILE)
    assert not any(ord(c) < 32 or 127 <= ord(c) <= 159 or c in "\u202e\u2066\u2069\u200f" for c in out)


def test_ordinary_text_is_unchanged():
    assert one_line("MoRAM (rank=8) — ü, 日本") == "MoRAM (rank=8) — ü, 日本"
