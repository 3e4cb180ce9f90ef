"""Text from result files escaped for the format it lands in.

Names, labels and parameter values in a result file are untrusted: each renderer passes them
through the function of its format, so a crafted name shows as text and never becomes markup,
a link, a table cell or a LaTeX command.
"""

from __future__ import annotations

import html as _html
import re

from cl_bench.errors import one_line

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that can start
# markup inside a line (emphasis, code, links, images, HTML, entities, headings, table cells,
# strike-through, GitHub math). Line-start markup cannot occur: the text is one line placed after
# a table pipe or a heading's hashes.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#!|&~$])")
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\textasciitilde{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


def html(text: object) -> str:
    """Escaped for HTML text and attribute values."""
    return _html.escape(one_line(str(text)), quote=True)


def markdown(text: object) -> str:
    """Escaped for Markdown inline text, a GitHub table cell and a heading: one line, no markup."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line(str(text)))


def latex(text: object) -> str:
    """Escaped for LaTeX text (a table cell or a comment)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in one_line(str(text)))


def plot_text(text: object) -> str:
    """For matplotlib titles, ticks and legends: one line, and `$` kept from starting mathtext."""
    return one_line(str(text)).replace("$", r"\$")


ESCAPERS = {"md": markdown, "html": html, "latex": latex, "text": one_line, "csv": str}


def for_format(fmt: str):
    """The escaping function of a report format ("md", "html", "latex", "text", "csv")."""
    return ESCAPERS.get(fmt, one_line)
