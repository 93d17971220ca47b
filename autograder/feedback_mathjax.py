"""Formulas in feedback pages, typeset by the course's own copy of MathJax: no request leaves the machine.

nbgrader's feedback template loads MathJax 2.7.7 from a CDN (nbconvert's ``mathjax()`` macro,
called without the exporter's ``mathjax_url``), so offline the formulas stay TeX source and
online every student's page tells the CDN it was opened. :class:`FeedbackExporter` is the
exporter nbgrader's ``GenerateFeedback`` uses instead (``nbgrader_config.py``)::

    c.GenerateFeedback.exporter_class = "autograder.feedback_mathjax.FeedbackExporter"

It renders the page exactly as before, then replaces the CDN script and its MathJax 2
configuration by MathJax 3 from a copy in the feedback folder (``feedback/_mathjax/``, written
once per course by :func:`install_mathjax` and referenced by a relative path, so the folder can
be zipped or moved as a whole). The copy is the one the book serves (the ``sphinx-mathjax-offline``
package of ``requirements.txt``): ``tex-svg-full.js``, one file with every TeX extension and
its fonts drawn as SVG paths (browsers refuse web fonts from ``file:`` pages, so CHTML output
would not draw), plus ``ui/safe.js``. Student formulas are untrusted: the ``safe`` extension
drops ``javascript:`` links (``\\href``), styles and ids a formula could set, and the context
menu (which loads further components on demand) is off.

A page given to a student on its own (nbgrader's ``release_feedback`` copies only the HTML
file) shows the TeX source, as offline today; it still makes no request to another machine.
Without the package the pages are written all the same, with the TeX source and no MathJax at
all (a warning says why): one missing package must not cost the class its feedback.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

from nbconvert.exporters import HTMLExporter

FOLDER = "_mathjax"  # inside the course's feedback folder, next to the students' folders
SCRIPT = "tex-svg-full.js"
FILES = (SCRIPT, "ui/safe.js")

# what nbconvert's mathjax.html.j2 macro writes: the CDN script and its MathJax 2 configuration
_CDN_BLOCK = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)

_LOCAL_BLOCK = """<!-- MathJax 3 from the course's copy (autograder/feedback_mathjax.py): no request leaves the machine -->
<script>
window.MathJax = {{
  tex: {{
    inlineMath: [['$', '$'], ['\\\\(', '\\\\)']],
    displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']],
    processEscapes: true,
    processEnvironments: true,
    tags: 'ams'
  }},
  loader: {{load: ['ui/safe']}},
  options: {{enableMenu: false}},
  svg: {{fontCache: 'global'}}
}};
</script>
<script src="{src}"></script>"""


_NO_MATHJAX = "<!-- no MathJax: sphinx-mathjax-offline is not installed (autograder/feedback_mathjax.py) -->"


def mathjax_source() -> Path:
    """The MathJax 3 folder of the ``sphinx-mathjax-offline`` package (the book's own copy)."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("feedback pages typeset formulas with the MathJax of the sphinx-mathjax-offline "
                           "package: pip install -r requirements.txt (or sphinx-mathjax-offline==0.0.2)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"{folder} lacks {', '.join(missing)}: reinstall sphinx-mathjax-offline")
    return folder


def install_mathjax(feedback_root: str | os.PathLike) -> Path:
    """Copy MathJax into ``feedback_root/_mathjax/`` unless an identical copy is there; returns
    the script's path. Each file is written under a temporary name and renamed, so a page opened
    (or a second feedback run) meanwhile never sees half a file."""
    source = mathjax_source()
    target = Path(feedback_root) / FOLDER
    for name in FILES:
        src, dst = source / name, target / name
        if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target / SCRIPT


def local_mathjax(html: str, src: str | None) -> str:
    """``html`` (a page of nbconvert's HTML templates) loading MathJax 3 from ``src`` instead of
    the CDN (``None``: no MathJax at all). Raises if the page has no such block (a changed
    template must not pass unnoticed)."""
    if not _CDN_BLOCK.search(html):
        raise ValueError("no nbconvert MathJax block found in the feedback page (has nbconvert's "
                         "mathjax.html.j2 changed?): cannot serve MathJax locally")
    block = _NO_MATHJAX if src is None else _LOCAL_BLOCK.format(src=src)
    return _CDN_BLOCK.sub(lambda _: block, html, count=1)


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback page with MathJax from the course's feedback folder (see the module).

    Used by ``GenerateFeedback`` (its ``parent``), whose course directory says where the page
    goes: the script is referenced relative to the page's own folder."""

    def from_notebook_node(self, nb, resources=None, **kw):
        html, resources = super().from_notebook_node(nb, resources, **kw)
        coursedir = getattr(self.parent, "coursedir", None)
        info = (resources or {}).get("nbgrader", {})
        if coursedir is None or not {"student", "assignment", "notebook"} <= info.keys():
            raise RuntimeError("FeedbackExporter renders feedback pages for nbgrader's GenerateFeedback "
                               "(c.GenerateFeedback.exporter_class), which says where each page goes")
        step = coursedir.feedback_directory
        root = Path(os.path.normpath(coursedir.format_path(step, ".", ".")))
        page_folder = Path(coursedir.format_path(step, info["student"], info["assignment"])) / info["notebook"]
        try:
            script = install_mathjax(root)
        except RuntimeError as e:
            self.log.warning("feedback page without MathJax (formulas stay TeX source): %s", e)
            return local_mathjax(html, None), resources
        return local_mathjax(html, Path(os.path.relpath(script, page_folder.parent)).as_posix()), resources
