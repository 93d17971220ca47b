"""Student content in feedback and formgrader pages, as HTML that runs no script.

nbgrader renders submissions with nbconvert's ``HTMLExporter`` for the student's feedback and
for the instructor's formgrader (at the Jupyter server's origin, where a script could act with
the instructor's session). ``nbgrader_config.py`` turns on the exporter's ``sanitize_html`` (no
JavaScript or widget outputs, HTML outputs cleaned) and replaces two of its filters with these:
``markdown2html`` renders markdown (cells and ``text/markdown`` outputs) and cleans the result,
so a ``javascript:`` link written in markdown is caught too; ``clean_html`` keeps what notebooks
show (headings, paragraphs, tables, images with ``data:`` or web sources, code, formulas as
text for MathJax) and drops scripts, event handlers, styles, frames, forms and unsafe URLs.
A markdown image of a missing attachment shows its alt text (nbconvert raises, which would stop
the page). Image outputs never reach these filters: the template writes their ``width`` and
``height`` metadata unquoted, so :class:`NumericImageSizes` keeps only numbers there.
"""

from __future__ import annotations

import re

import bleach
from bleach.css_sanitizer import CSSSanitizer
from jinja2 import pass_context
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbconvert.preprocessors import Preprocessor

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "details", "div", "dl",
    "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
    "kbd", "li", "ol", "p", "pre", "s", "samp", "small", "span", "strong", "sub", "summary", "sup",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul", "var",
}
_COMMON = {"class", "id", "title", "align", "style"}
_PER_TAG = {"a": {"href", "name"}, "img": {"src", "alt", "width", "height"},
            "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"}, "ol": {"start"}}
_CSS = CSSSanitizer(allowed_css_properties=[
    "color", "background-color", "text-align", "vertical-align", "font-weight", "font-style",
    "width", "height", "max-width", "border", "padding", "margin", "white-space"])


def _allowed(tag: str, name: str, value: str) -> bool:
    """Attributes a tag may keep; ``data:`` URLs only as images (plots embedded in markdown)."""
    if name not in _COMMON and name not in _PER_TAG.get(tag, ()):
        return False
    if name in ("href", "src"):
        url = value.strip().lower()
        if url.startswith("data:"):
            return tag == "img" and url.startswith("data:image/") and not url.startswith("data:image/svg")
    return True


def clean_html(element) -> str:
    """Student HTML without anything that runs: disallowed tags are shown as text."""
    text = element.decode() if isinstance(element, bytes) else str(element)
    return bleach.clean(text, tags=TAGS, attributes=_allowed, protocols={"http", "https", "mailto", "data"},
                        css_sanitizer=_CSS, strip_comments=True)


class _Renderer(IPythonRenderer):
    """nbconvert's renderer, except that an image of an attachment the cell lacks is its alt text."""

    def image(self, text: str, url: str, title: str | None = None) -> str:
        if url.startswith("attachment:") and url.removeprefix("attachment:") not in self.attachments:
            return text
        return super().image(text, url, title)


@pass_context
def markdown2html(context, source: str) -> str:
    """nbconvert's markdown rendering (formulas, attached images), then :func:`clean_html`."""
    cell = context.get("cell", {})
    renderer = _Renderer(escape=False, attachments=cell.get("attachments", {}),
                         path=context.get("resources", {}).get("metadata", {}).get("path", ""))
    return clean_html(MarkdownWithMath(renderer=renderer).render(source))


def _numeric(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value, re.ASCII) is not None)


class NumericImageSizes(Preprocessor):
    """Drops every output's ``width``/``height`` metadata that is not a number: nbconvert's
    template writes them unquoted into ``<img>``, where ``1 onerror=...`` would be a handler."""

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            metadata = output.get("metadata", {})
            for meta in [metadata, *(m for m in metadata.values() if isinstance(m, dict))]:
                for key in ("width", "height"):
                    if key in meta and not _numeric(meta[key]):
                        del meta[key]
        return cell, resources
