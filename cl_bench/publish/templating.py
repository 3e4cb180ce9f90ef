"""Pages rendered from the Jinja2 templates in `cl_bench/publish/templates/` (package files).

Every `{{ value }}` is escaped for the page it lands in, so a template needs no filter to be safe:
- HTML templates (`*.html.j2`) autoescape; a string is escaped by `escape.html` (line breaks and
  other control characters become spaces, then entities), other values by markupsafe;
- Markdown templates (`*.md.j2`) pass every value through `escape.markdown` (Jinja's `finalize`,
  Markdown's counterpart of autoescape): a filter to remember could be forgotten.
What cl_bench wrote itself is marked and placed as it is: `markupsafe.Markup` in HTML (tables from
`render_table`, whose cells are escaped when the frame is built), `MarkdownText` in Markdown (the
same tables, hand-written header.md); `{{ path|verbatim }}` places a generated path (a `safe_slug`
name) in a Markdown link unchanged.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from cl_bench import escape


class MarkdownText(str):
    """Markdown that cl_bench wrote or checked: a Markdown template places it without escaping."""


def _html_value(value: Any) -> Any:
    from markupsafe import Markup

    # escape.html (one line, then entities) rather than markupsafe's own spelling of quotes, so that a
    # name reads the same in a heading as in a table cell; a Markup value is placed as it is.
    return Markup(escape.html(value)) if isinstance(value, str) and not isinstance(value, Markup) else value


def _markdown_value(value: Any) -> str:
    return value if isinstance(value, MarkdownText) else escape.markdown(value)


@functools.cache
def _environment(fmt: str):
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cl_bench.publish", "templates"),
        autoescape=fmt == "html",
        finalize=_html_value if fmt == "html" else _markdown_value,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    if fmt == "md":
        environment.filters["verbatim"] = MarkdownText
    return environment


def render(name: str, **context: Any) -> str:
    """Render the package template `name` (`*.html.j2` or `*.md.j2`) with `context`."""
    return _environment("md" if name.endswith(".md.j2") else "html").get_template(name).render(**context)


def package_text(name: str) -> str:
    """A file of `cl_bench/publish/templates/` as it is (not a template: `{{` in it stays as it is)."""
    return resources.files("cl_bench.publish").joinpath("templates").joinpath(name).read_text(encoding="utf-8")
