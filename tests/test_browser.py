"""The built book as readers meet it: every page opened in a real (headless) Chromium.

Uses Python Playwright with Debian's ``chromium`` (no browser download; ``.ci/run`` installs it
with a CJK font). For every page: no console errors, no request leaving the machine, every
formula rendered by MathJax without an error node and without a visible backslash (``\\_`` in
``\\text{}``), every image loaded with real alt text, no progress bar that printed a line per
update, and at 1280 px no display equation, code cell or output wider than the text column (a
cell tagged ``scroll-output``/``scroll-input`` may scroll). At 390 px (a phone) the page never
scrolls sideways and nothing is cut off: what is wider than the column wraps or scrolls inside
its own box. Every page has the same layout at 1280 px (text column, sidebar fully on screen,
footer). The sidebar and previous/next links walk the table of contents in order, and the
search page finds each chapter. Screenshots at 1280 and 390 px are kept in
``book/_build/screenshots/``. Broken fixture pages prove the checks bite.

A graded notebook's feedback page (the course's own commands) typesets its formulas with the
course's copy of MathJax and makes no request to another machine.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

from conftest import ASSIGNMENT, ROOT, grade_class, make_submission, notebook_of, run_cli
from test_book import BOOK, chapter_pages, html  # noqa: F401  (html: the built book fixture)

CHROMIUM = shutil.which(os.environ.get("CHROMIUM", "chromium")) or shutil.which("chromium-browser")

SCREENSHOTS = BOOK / "_build" / "screenshots"
PAGES = ["intro", "pytorch/pytorch", *chapter_pages(), "glossary"]

MAX_BAR_LINES = 2      # one progress bar may show its start and its final state, no more
MAX_PROGRESS_LINES = 20  # progress-bar lines on one page, all bars together

# Runs in the page once MathJax is done; returns a list of problems in words.
PAGE_PROBLEMS = r"""() => {
  const problems = [];
  const maths = [...document.querySelectorAll('span.math, div.math')];
  const rendered = maths.filter(m => m.querySelector('mjx-container'));
  if (rendered.length !== maths.length)
    problems.push(`${maths.length - rendered.length} of ${maths.length} formulas not rendered`);
  for (const e of document.querySelectorAll('mjx-merror'))
    problems.push(`MathJax error: ${e.getAttribute('data-mjx-error') || e.textContent}`);
  // a backslash a reader sees: the glyph itself (CHTML class mjx-c5C) or the formula's text
  // (MathJax's hidden MathML copy, e.g. <mtext>kv\_heads</mtext>)
  for (const m of document.querySelectorAll('mjx-container'))
    if (m.querySelector('mjx-c.mjx-c5C') || m.textContent.includes('\\'))
      problems.push(`visible backslash in a formula: "${m.textContent.trim().slice(0, 60)}"`);
  for (const img of document.querySelectorAll('article img')) {
    const src = img.getAttribute('src');
    if (!img.complete || img.naturalWidth === 0) problems.push(`image not loaded: ${src}`);
    const alt = (img.getAttribute('alt') || '').trim();
    if (alt.length < 10 || /\.(png|svg|jpe?g)$/i.test(alt) || alt.includes('_images/'))
      problems.push(`image without real alt text: ${src} (alt "${alt}")`);
  }
  // progress bars (tqdm's "desc: 40%|████      | 4/10 [00:01<00:01, 3.9it/s]") that printed a
  // line per update: the same bar (its description, in one output) on more than MAX_BAR_LINES lines
  const PROGRESS = /\d+%\|.*\|\s*\d+\/\d+|\|\s*\d+\/\d+\s*\[|\d(?:it\/s|s\/it)\]/;
  const bars = new Map();
  let progress = 0;
  document.querySelectorAll('div.cell_output').forEach((output, n) => {
    for (const line of output.textContent.split(/[\r\n]+/)) {
      if (!PROGRESS.test(line)) continue;
      progress++;
      const key = `${n}:${line.split(/\s*\d+%\||\s*\d+it \[/)[0].trim()}`;
      const [count] = bars.get(key) || [0];
      bars.set(key, [count + 1, line.trim()]);
    }
  });
  for (const [count, line] of bars.values())
    if (count > MAX_BAR_LINES)
      problems.push(`a progress bar printed ${count} lines (show its final state only): "${line.slice(0, 80)}"`);
  if (progress > MAX_PROGRESS_LINES)
    problems.push(`${progress} progress-bar lines on the page (at most ${MAX_PROGRESS_LINES})`);
  const d = document.documentElement;
  if (d.scrollWidth > d.clientWidth + 1)
    problems.push(`the page scrolls sideways: ${d.scrollWidth} px wide in a ${d.clientWidth} px window`);
  const column = document.querySelector('article.bd-article');
  const right = column.getBoundingClientRect().right;
  const wide = 'div.math, mjx-container[display="true"], div.highlight pre, div.cell_output pre, div.cell_output img';
  for (const e of column.querySelectorAll(wide)) {
    if (e.closest('.tag_scroll-output, .tag_scroll-input')) continue;
    const box = e.getBoundingClientRect();
    if (e.scrollWidth > e.clientWidth + 1 || box.right > right + 1)
      problems.push(`wider than the column: ${e.tagName.toLowerCase()}.${e.className} ` +
                    `"${e.textContent.trim().slice(0, 60)}" (${e.scrollWidth} > ${e.clientWidth} px)`);
  }
  return problems;
}""".replace("MAX_BAR_LINES", str(MAX_BAR_LINES)).replace("MAX_PROGRESS_LINES", str(MAX_PROGRESS_LINES))

# At 390 px: the page itself never scrolls sideways, and nothing reaches past the window's edge
# unless a box around it scrolls (a wide formula, table or output scrolls inside its own box).
NARROW_PROBLEMS = r"""() => {
  const problems = [];
  const d = document.documentElement, limit = d.clientWidth + 1;
  if (d.scrollWidth > limit)
    problems.push(`the page scrolls sideways at ${d.clientWidth} px: ${d.scrollWidth} px wide`);
  const scrollsInside = e => {
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if ((o === 'auto' || o === 'scroll') && a.getBoundingClientRect().right <= limit) return true;
    }
    return false;
  };
  const reported = [];
  const boxes = 'mjx-container, table, pre, img, svg, code, div.highlight, div.cell_output, p, li, dl, dt, dd';
  for (const e of document.querySelector('article.bd-article').querySelectorAll(boxes)) {
    if (reported.some(r => r.contains(e))) continue;
    const b = e.getBoundingClientRect();
    if (b.width > 0 && b.right > limit && !scrollsInside(e)) {
      reported.push(e);
      const name = e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className ? '.' + e.className.split(' ')[0] : '');
      problems.push(`cut off at ${d.clientWidth} px: ${name} "${e.textContent.trim().slice(0, 50)}" reaches ${Math.round(b.right)} px`);
    }
  }
  return problems;
}"""

# The page's frame at 1280 px: [left, width] of the text column, the left sidebar and the footer.
LAYOUT = r"""() => {
  const box = s => {
    const e = document.querySelector(s);
    if (!e || !e.getClientRects().length) return null;
    const b = e.getBoundingClientRect();
    return [Math.round(b.left), Math.round(b.width)];
  };
  return {column: box('article.bd-article'), sidebar: box('.bd-sidebar-primary'),
          footer: box('footer.bd-footer-content')};
}"""
LAYOUT_TOLERANCE = 3  # px


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


BAR = "training:  {0:3d}%|{1:<10}| {2}/10 [00:0{2}&lt;00:01,  9.10it/s]"
BROKEN = ('<h1>Broken fixture</h1>'
          '<div class="math notranslate nohighlight">\\[\\frac{1}{2\\]</div>'
          '<img src="missing.png" alt="A picture that does not exist on disk">'
          '<div class="math notranslate nohighlight">\\[' + " + ".join(["x_{%d}" % i for i in range(80)]) + '\\]</div>'
          '<p>Memory: <span class="math notranslate nohighlight">\\(2 \\cdot \\text{kv\\_heads}\\)</span>.</p>'
          '<div class="cell_output docutils container"><div class="output stderr highlight-myst-ansi notranslate">'
          '<div class="highlight"><pre><span></span>'
          + "\n".join(BAR.format(10 * i, "█" * i, i) for i in range(1, 8)) +
          '</pre></div></div></div>'
          '<p style="width: 600px">A paragraph as wide as a tablet, on a phone.</p>')
# a page whose frame is off: the sidebar pushed partly off the screen, the column wider
SHIFTED = '<style>.bd-sidebar-primary { margin-left: -120px; }</style>'


@pytest.fixture(scope="module")
def site(html):  # noqa: F811
    """The built HTML (plus broken fixture pages) served on localhost."""
    root = html.parent / "html-under-test"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(html, root)
    template = (root / "01-tokens" / "tokens.html").read_text()
    (root / "01-tokens" / "broken.html").write_text(
        re.sub(r'(<article class="bd-article">).*?(</article>)', lambda m: m[1] + BROKEN + m[2],
               template, flags=re.S))
    (root / "01-tokens" / "shifted.html").write_text(template.replace("</head>", SHIFTED + "</head>", 1))
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "the browser tests need Chromium and a CJK font: apt-get install chromium fonts-noto-cjk"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, url: str, width: int = 1280):
    """Open ``url``; returns (page, console errors, requests that tried to leave the machine)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if urlparse(r.request.url).hostname in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="load")
    if page.query_selector("span.math, div.math"):
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("MathJax.startup.promise")
    return page, errors, outside


def problems_of(browser, url: str) -> list[str]:
    """What is wrong with the page at 1280 px (PAGE_PROBLEMS, console errors, outside requests)."""
    page, errors, outside = open_page(browser, url)
    problems = page.evaluate(PAGE_PROBLEMS)
    problems += [f"console error: {e}" for e in errors]
    problems += [f"request leaving the machine: {u}" for u in outside]
    page.close()
    return problems


def narrow_problems_of(browser, url: str, screenshot: Path | None = None) -> list[str]:
    """What is wrong with the page at 390 px (NARROW_PROBLEMS); a full-page screenshot if asked."""
    page, _, _ = open_page(browser, url, 390)
    problems = page.evaluate(NARROW_PROBLEMS)
    if screenshot:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return problems


def layout_of(browser, url: str) -> dict:
    page, _, _ = open_page(browser, url)
    layout = page.evaluate(LAYOUT)
    page.close()
    return layout


def layout_problems(layout: dict, usual: dict, width: int = 1280) -> list[str]:
    """How ``layout`` differs from the ``usual`` one of the book's pages, and a sidebar off the screen."""
    problems = []
    for part, box in layout.items():
        if box is None:
            problems.append(f"no {part}")
        elif any(abs(a - b) > LAYOUT_TOLERANCE for a, b in zip(box, usual[part])):
            problems.append(f"{part} at left {box[0]} px, {box[1]} px wide; the other pages: "
                            f"left {usual[part][0]} px, {usual[part][1]} px wide")
    sidebar = layout["sidebar"]
    if sidebar and (sidebar[0] < 0 or sidebar[0] + sidebar[1] > width):
        problems.append(f"the sidebar is not fully on screen: {sidebar[0]} to {sidebar[0] + sidebar[1]} px")
    return problems


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_cleanly(site, browser, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{name.replace('/', '__')}-{{}}.png"
    problems = problems_of(browser, f"{site}/{name}.html")
    problems += narrow_problems_of(browser, f"{site}/{name}.html", Path(str(shot).format(390)))
    page, _, _ = open_page(browser, f"{site}/{name}.html", 1280)
    page.screenshot(path=str(shot).format(1280), full_page=True)
    page.close()
    assert not problems, "\n".join(problems)


def test_pages_share_one_layout(site, browser):
    """At 1280 px every page has the same frame: text column, left sidebar (fully on screen) and
    footer within LAYOUT_TOLERANCE px of where most pages have them."""
    layouts = {name: layout_of(browser, f"{site}/{name}.html") for name in PAGES}
    usual = {part: Counter(tuple(layout[part]) for layout in layouts.values() if layout[part]).most_common(1)[0][0]
             for part in ("column", "sidebar", "footer")}
    problems = [f"{name}: {problem}" for name, layout in layouts.items() for problem in layout_problems(layout, usual)]
    assert not problems, "\n".join(problems)


def test_checks_catch_a_broken_page(site, browser):
    url = f"{site}/01-tokens/broken.html"
    problems = "\n".join(problems_of(browser, url))
    assert re.search(r"MathJax error|\d+ of \d+ formulas not rendered", problems), problems
    assert "image not loaded: missing.png" in problems, problems
    assert "wider than the column" in problems, problems
    assert 'visible backslash in a formula: "2⋅kv\\_heads' in problems, problems
    assert "a progress bar printed 7 lines" in problems, problems
    narrow = "\n".join(narrow_problems_of(browser, url))
    assert "the page scrolls sideways at 390 px" in narrow, narrow
    assert 'cut off at 390 px: p "A paragraph as wide as a tablet' in narrow, narrow
    usual = layout_of(browser, f"{site}/01-tokens/tokens.html")
    shifted = "\n".join(layout_problems(layout_of(browser, f"{site}/01-tokens/shifted.html"), usual))
    assert "the sidebar is not fully on screen" in shifted and "column at left" in shifted, shifted


def test_previous_next_links_walk_the_table_of_contents(site, browser):
    page, errors, _ = open_page(browser, f"{site}/intro.html")
    visited = ["intro"]
    while (link := page.query_selector("a.right-next")) is not None:
        link.click()
        page.wait_for_load_state("load")
        visited.append(page.url.split(site + "/")[1].removesuffix(".html"))
        assert page.query_selector("a.left-prev"), f"{visited[-1]}: no link back"
    assert visited == PAGES
    assert errors == []


def test_sidebar_links_all_resolve(site, browser):
    page, _, _ = open_page(browser, f"{site}/intro.html")
    links = page.eval_on_selector_all("nav.bd-docs-nav a.reference.internal", "as => as.map(a => a.href)")
    assert len(links) >= len(PAGES) - 1
    for link in links:
        assert page.request.get(link).status == 200, link


@pytest.mark.parametrize("name", chapter_pages())
def test_search_finds_each_chapter(site, browser, name):
    """Search for the longest word of the chapter's title; the chapter is among the results."""
    title = re.search(r"^# (.+)$", (BOOK / f"{name}.md").read_text(), re.M)[1]
    term = max(re.findall(r"[A-Za-z]+", title), key=len)
    page, errors, _ = open_page(browser, f"{site}/search.html?q={term}")
    # the results appear one by one: read them once Sphinx's search says it finished
    page.wait_for_function("() => document.querySelector('#search-results h2')?.innerText === 'Search Results'",
                           timeout=30_000)
    hits = page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
    assert any(f"/{name}.html" in h for h in hits), (term, hits)
    assert errors == []


# ---------------------------------------------------------------------------------------------
# Feedback pages: formulas typeset by the course's own MathJax, no request to another machine.

FORMULAS = r"""## My notes

The scale is $\frac{1}{\sqrt{d_k}}$, and the weights are

$$\mathrm{softmax}(z)_i = \frac{e^{z_i}}{\sum_j e^{z_j}}$$

A formula may try a link, $\href{javascript:window.__pwned = 1}{\text{click me}}$, or a picture
from elsewhere, $\style{background-image: url(https://example.com/track.png)}{x}$.
"""


@pytest.fixture(scope="module")
def feedback_page(tmp_path_factory) -> Path:
    """The feedback page of a graded Chapter 1 notebook with formulas in a markdown cell, made by
    the README's commands on a course with the repository's config."""
    course = tmp_path_factory.mktemp("feedback-course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, course / "solutions" / ASSIGNMENT)
    run_cli(course, "generate", ASSIGNMENT)
    nb = make_submission(course)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first_code + 1, nbformat.v4.new_markdown_cell(FORMULAS))
    summary = grade_class(course, ASSIGNMENT, {"maths": nb}, tmp_path_factory.mktemp("downloads"))
    assert summary["maths"]["score"] > 0, summary["maths"]
    run_cli(course, "feedback", ASSIGNMENT)
    return course / "feedback" / "maths" / ASSIGNMENT / notebook_of(ASSIGNMENT).replace(".ipynb", ".html")


def test_feedback_page_typesets_formulas_with_no_outside_request(browser, feedback_page):
    page = browser.new_page()
    requests, errors = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        requests.append(r.request.url)
        url = urlparse(r.request.url)
        (r.continue_ if url.scheme in ("file", "data") or url.hostname in ("127.0.0.1", "localhost") else r.abort)()

    page.route("**/*", route)
    page.goto(feedback_page.as_uri(), wait_until="load")
    outside = [u for u in requests if urlparse(u).scheme not in ("file", "data")
               and urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    assert not outside, (f"the feedback page asked another machine for {outside}: is "
                         "c.GenerateFeedback.exporter_class = 'autograder.feedback_mathjax.FeedbackExporter' "
                         "in nbgrader_config.py?")
    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("MathJax.startup.promise")
    for link in page.locator("mjx-container a").all():
        link.click(no_wait_after=True)
    page.wait_for_timeout(300)
    seen = page.evaluate("""() => ({
        formulas: document.querySelectorAll('mjx-container').length,
        drawn: [...document.querySelectorAll('mjx-container svg')].filter(s => s.getBoundingClientRect().width > 0).length,
        errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
        tex: document.body.innerText.includes('\\\\frac'),
        links: [...document.querySelectorAll('a[href^="javascript"], [*|href^="javascript"]')].length,
        pwned: window.__pwned || null,
    })""")
    page.close()
    assert seen["formulas"] >= 4 and seen["drawn"] == seen["formulas"], seen
    assert seen["errors"] == 0 and not seen["tex"], seen
    assert seen["links"] == 0 and seen["pwned"] is None, seen
    assert errors == [], errors
    outside = [u for u in requests if urlparse(u).scheme not in ("file", "data")]
    assert not outside, outside  # a formula's style asks for nothing either


def test_feedback_mathjax_copy_is_shared_and_unchanged_template_is_required(feedback_page, monkeypatch):
    """One copy per course, written once; a changed nbconvert template is an error, not a page
    that quietly loads the CDN; without the package a page keeps its TeX and loads nothing."""
    from autograder import feedback_mathjax

    root = feedback_page.parents[2]
    script = root / feedback_mathjax.FOLDER / feedback_mathjax.SCRIPT
    assert script.is_file() and f'src="../../{feedback_mathjax.FOLDER}/{feedback_mathjax.SCRIPT}"' in feedback_page.read_text()
    assert "cdnjs" not in feedback_page.read_text()
    stamp = script.stat().st_mtime_ns
    assert feedback_mathjax.install_mathjax(root) == script and script.stat().st_mtime_ns == stamp  # not copied again
    with pytest.raises(ValueError, match="MathJax block"):
        feedback_mathjax.local_mathjax("<html><head></head></html>", "x.js")
    cdn = '<!-- Load mathjax --><script src="https://cdnjs.cloudflare.com/x.js"></script><!-- End of mathjax configuration -->'
    assert "<script" not in feedback_mathjax.local_mathjax(cdn, None)
    monkeypatch.setattr(feedback_mathjax.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="sphinx-mathjax-offline"):
        feedback_mathjax.mathjax_source()
