"""Attack class: student content that runs script in the reader's browser.

A submission plants a ``<script>``, an ``onerror`` handler and ``javascript:`` links in a
markdown cell and in its outputs (``display(HTML(...))``, ``Javascript``, ``Markdown``), next
to a formula, a table and a matplotlib plot. Its feedback page, and its formgrader page as the
formgrader renders it (nbgrader's formgrade template through the course's exporter config),
are opened in Chromium (headless, network blocked), every link is clicked, and no planted code
may have run; the plot must still show and the formula and table must still be there.
"""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbconvert.exporters import HTMLExporter
from nbgrader.server_extensions.formgrader import handlers
from traitlets.config import Config, PyFileConfigLoader

from conftest import ASSIGNMENT, grade_class, make_submission, run_cli

PWN = "(window.__pwned = (window.__pwned || []).concat('{}'))"
MARKDOWN = f'''## My notes

<img src="missing.png" onerror="{PWN.format('md-onerror')}">
<script>{PWN.format('md-script')}</script>
[click me]( javascript:{PWN.format('md-link')} ) and <a href="javascript:{PWN.format('md-anchor')}">click me too</a>

The scale is $\\frac{{1}}{{\\sqrt{{d_k}}}}$.

| tokens | ids |
|---|---|
| a b | 0 1 |
'''
OUTPUTS = f'''
from IPython.display import HTML, Javascript, Markdown, display
import matplotlib.pyplot as plt
display(HTML("""<script>{PWN.format('out-script')}</script><img src="nope.png" onerror="{PWN.format('out-onerror')}">"""
             """<a href="javascript:{PWN.format('out-link')}">output link</a>"""))
display(Javascript("{PWN.format('out-js')}"))
display(Markdown("[markdown output link](javascript:{PWN.format('out-md-link')})"))
plt.plot([0, 1, 4, 9])
plt.show()
'''


@pytest.fixture(scope="module")
def pages(course, tmp_path_factory) -> dict[str, Path]:
    nb = make_submission(course)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[first_code + 1:first_code + 1] = [nbformat.v4.new_markdown_cell(MARKDOWN),
                                               nbformat.v4.new_code_cell(OUTPUTS)]
    summary = grade_class(course, ASSIGNMENT, {"xss": nb}, tmp_path_factory.mktemp("downloads"))
    assert summary["xss"]["score"] == 10.0, summary["xss"]
    run_cli(course, "feedback", ASSIGNMENT)
    return {"feedback": course / "feedback" / "xss" / ASSIGNMENT / "tokens.html",
            "formgrader": formgrader_page(course, "xss", tmp_path_factory.mktemp("formgrade"))}


def formgrader_page(course: Path, student: str, folder: Path) -> Path:
    """``student``'s graded notebook as the formgrader renders it (nbgrader's formgrade template
    through the course's exporter config), written into ``folder``."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    extra = Config()  # what nbgrader's FormgradeExtension adds to the course's config
    extra.HTMLExporter.template_name = "formgrade"
    extra.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    config.merge(extra)
    resources = {"assignment_id": ASSIGNMENT, "notebook_id": "tokens", "submission_id": "x", "index": 0,
                 "total": 1, "base_url": "/", "student": student, "last_name": None, "first_name": None,
                 "notebook_path": f"autograded/{student}/{ASSIGNMENT}/tokens.ipynb"}
    html, _ = HTMLExporter(config=config).from_filename(
        str(course / "autograded" / student / ASSIGNMENT / "tokens.ipynb"), resources=resources)
    page = folder / "formgrade.html"
    page.write_text(html)
    return page


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "this test needs Chromium: `apt-get install chromium` (Debian) or `chromium-browser`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


def _visit(browser, path: Path) -> dict:
    page = browser.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
               else route.abort())  # offline: CDN scripts of the page fail fast
    page.goto(path.as_uri(), wait_until="load")
    for link in page.locator("a").all():
        if link.is_visible() and "link" in (link.text_content() or "") or "click me" in (link.text_content() or ""):
            link.click(no_wait_after=True)
    page.wait_for_timeout(500)
    seen = page.evaluate("""() => ({
        pwned: window.__pwned || [],
        plots: [...document.images].filter(i => i.src.startsWith('data:image/png') && i.naturalWidth > 0).length,
        text: document.body.innerText,
        tables: [...document.querySelectorAll('table th')].map(th => th.innerText.trim()),
        formulas: document.querySelectorAll('mjx-container').length,
    })""")
    page.close()
    return seen


@pytest.mark.parametrize("which", ["feedback", "formgrader"])
def test_no_planted_script_runs_and_plots_formulas_tables_show(pages, browser, which):
    html = pages[which].read_text()
    assert "click me" in html and "output link" in html, "the planted content must be on the page"
    seen = _visit(browser, pages[which])
    assert seen["pwned"] == [], seen["pwned"]
    assert seen["plots"] >= 1
    assert "\\frac{1}{\\sqrt{d_k}}" in seen["text"] or seen["formulas"] >= 1  # TeX source, or typeset
    assert "tokens" in seen["tables"] and "ids" in seen["tables"]


class _Planted(HTMLParser):
    """Elements that would run planted code: scripts, on* handlers, javascript: URLs."""

    def __init__(self):
        super().__init__()
        self.found, self._in_script = [], False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"
        for name, value in attrs:
            if "__pwned" in (value or "") and (name.startswith("on") or (value or "").strip().startswith("javascript:")):
                self.found.append(f"<{tag} {name}=...>")

    def handle_data(self, data):
        if self._in_script and "__pwned" in data:
            self.found.append("<script>")


def test_the_sanitized_html_has_no_handler_script_or_javascript_url(pages):
    for path in pages.values():
        parser = _Planted()
        parser.feed(path.read_text())
        assert parser.found == [], (path.name, parser.found)
