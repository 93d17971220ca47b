"""The built book as readers meet it: every page opened in a real (headless) Chromium.

Uses Python Playwright with Debian's ``chromium`` (no browser download; ``.ci/run`` installs it
with a CJK font). For every page: no console errors, no request leaving the machine, every
formula rendered by MathJax without an error node, every image loaded with real alt text, and at
1280 px no display equation, code cell or output wider than the text column (a cell tagged
``scroll-output``/``scroll-input`` may scroll). The sidebar and previous/next links walk the
table of contents in order, and the search page finds each chapter. Screenshots at 1280 and
390 px are kept in ``book/_build/screenshots/``. A broken fixture page proves the checks bite.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import ROOT
from test_book import BOOK, chapter_pages, html  # noqa: F401  (html: the built book fixture)

CHROMIUM = shutil.which(os.environ.get("CHROMIUM", "chromium")) or shutil.which("chromium-browser")

SCREENSHOTS = BOOK / "_build" / "screenshots"
PAGES = ["intro", "pytorch/pytorch", *chapter_pages(), "glossary"]

# Runs in the page once MathJax is done; returns a list of problems in words.
PAGE_PROBLEMS = """() => {
  const problems = [];
  const maths = [...document.querySelectorAll('span.math, div.math')];
  const rendered = maths.filter(m => m.querySelector('mjx-container'));
  if (rendered.length !== maths.length)
    problems.push(`${maths.length - rendered.length} of ${maths.length} formulas not rendered`);
  for (const e of document.querySelectorAll('mjx-merror'))
    problems.push(`MathJax error: ${e.getAttribute('data-mjx-error') || e.textContent}`);
  for (const img of document.querySelectorAll('article img')) {
    const src = img.getAttribute('src');
    if (!img.complete || img.naturalWidth === 0) problems.push(`image not loaded: ${src}`);
    const alt = (img.getAttribute('alt') || '').trim();
    if (alt.length < 10 || /\\.(png|svg|jpe?g)$/i.test(alt) || alt.includes('_images/'))
      problems.push(`image without real alt text: ${src} (alt "${alt}")`);
  }
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
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(html):  # noqa: F811
    """The built HTML (plus a broken fixture page) served on localhost."""
    root = html.parent / "html-under-test"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(html, root)
    template = (root / "01-tokens" / "tokens.html").read_text()
    broken = ('<h1>Broken fixture</h1>'
              '<div class="math notranslate nohighlight">\\[\\frac{1}{2\\]</div>'
              '<img src="missing.png" alt="A picture that does not exist on disk">'
              '<div class="math notranslate nohighlight">\\[' + " + ".join(["x_{%d}" % i for i in range(80)])
              + '\\]</div>')
    (root / "01-tokens" / "broken.html").write_text(
        re.sub(r'(<article class="bd-article">).*?(</article>)', lambda m: m[1] + broken + m[2],
               template, flags=re.S))
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
    page, errors, outside = open_page(browser, url)
    problems = page.evaluate(PAGE_PROBLEMS)
    problems += [f"console error: {e}" for e in errors]
    problems += [f"request leaving the machine: {u}" for u in outside]
    page.close()
    return problems


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_cleanly(site, browser, name):
    problems = problems_of(browser, f"{site}/{name}.html")
    assert not problems, "\n".join(problems)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page, _, _ = open_page(browser, f"{site}/{name}.html", width)
        page.screenshot(path=str(SCREENSHOTS / f"{name.replace('/', '__')}-{width}.png"), full_page=True)
        page.close()


def test_checks_catch_a_broken_page(site, browser):
    problems = "\n".join(problems_of(browser, f"{site}/01-tokens/broken.html"))
    assert "MathJax error" in problems or "1 of 2 formulas not rendered" in problems, problems
    assert "image not loaded: missing.png" in problems, problems
    assert "wider than the column" in problems, problems


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
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    hits = page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
    assert any(f"/{name}.html" in h for h in hits), (term, hits)
    assert errors == []
