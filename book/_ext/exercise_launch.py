"""Launch buttons that open the chapter's exercise notebook (and two fixes to the theme's pages).

sphinx-book-theme points Colab, Binder and JupyterHub at the page's own source, which for a
chapter is a MyST Markdown file that Colab cannot open and Binder cannot run without jupytext.
What a reader wants to launch from a chapter is its exercise notebook,
``exercises/<chapter folder>/<page name>.ipynb``; this extension points every launch button there
and removes the buttons from pages that have no exercise notebook. The repository, branch and hub
come from ``book/_config.yml`` (``repository`` and ``launch_buttons``), the course's one place for
them; with no ``jupyterhub_url`` there is no JupyterHub button. The role
``{exercise-links}`02-sequences/sequences``` writes the same links into a page's text.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from docutils import nodes
from sphinx.application import Sphinx


def launch_urls(repo_url: str, branch: str, path: str, *, colab_url: str = "",
                binderhub_url: str = "", jupyterhub_url: str = "") -> dict[str, str]:
    """Button text → URL opening ``path`` (relative to the repository root) in JupyterLab."""
    org, repo = repo_url.rstrip("/").split("github.com/")[1].split("/")[:2]
    urls = {}
    if colab_url:
        urls["Colab"] = f"{colab_url.rstrip('/')}/github/{org}/{repo}/blob/{branch}/{path}"
    if binderhub_url:
        urls["Binder"] = (f"{binderhub_url.rstrip('/')}/v2/gh/{org}/{repo}/{branch}"
                          f"?urlpath={quote(f'lab/tree/{path}')}")
    if jupyterhub_url:  # nbgitpuller clones the repository into a folder named after it
        query = urlencode({"repo": repo_url, "branch": branch,
                           "urlpath": f"lab/tree/{repo}/{path}"}, safe="/")
        urls["JupyterHub"] = f"{jupyterhub_url.rstrip('/')}/hub/user-redirect/git-pull?{query}"
    return urls


def exercise_of(srcdir: Path, pagename: str) -> str | None:
    """The repository-relative exercise notebook of a chapter page, if it has one."""
    folder, _, name = pagename.partition("/")
    path = f"exercises/{folder}/{name}.ipynb"
    return path if name and (srcdir.parent / path).is_file() else None


def _urls(app: Sphinx, path: str) -> dict[str, str]:
    options = app.config.html_theme_options
    launch = options.get("launch_buttons", {})
    return launch_urls(options["repository_url"], options.get("repository_branch", "main"), path,
                       colab_url=launch.get("colab_url", ""),
                       binderhub_url=launch.get("binderhub_url", ""),
                       jupyterhub_url=launch.get("jupyterhub_url", ""))


def _exercise_links_role(name, rawtext, text, lineno, inliner, options=None, content=()):
    """``{exercise-links}`NN-folder/name``` → "GitHub, Colab, Binder[, JupyterHub]" links."""
    app = inliner.document.settings.env.app
    path = exercise_of(Path(app.srcdir), text.strip())
    if path is None:
        message = inliner.reporter.error(f"no exercise notebook exercises/{text}.ipynb", line=lineno)
        return [inliner.problematic(rawtext, rawtext, message)], [message]
    options_ = app.config.html_theme_options
    github = f"{options_['repository_url'].rstrip('/')}/blob/{options_.get('repository_branch', 'main')}/{path}"
    result: list[nodes.Node] = []
    for i, (label, url) in enumerate({"GitHub": github, **_urls(app, path)}.items()):
        result += [nodes.Text(", ")] if i else []
        result.append(nodes.reference(rawtext, label, refuri=url))
    return result, []


def _point_buttons(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    buttons = context.get("header_buttons", [])
    group = next((b for b in buttons if b.get("label") == "launch-buttons"), None)
    if group is None:
        return
    path = exercise_of(Path(app.srcdir), pagename)
    if path is None:
        buttons.remove(group)
        return
    urls = _urls(app, path)
    group["buttons"] = [dict(b, url=urls[b["text"]]) for b in group["buttons"] if b["text"] in urls]


def _drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict,
                            doctree) -> None:
    """Jupyter Book registers sphinx-thebe's and togglebutton's inline scripts twice; the second
    ``const THEBE_JS_URL`` is a SyntaxError in every page's console. Keep the first of each."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (str(getattr(script, "filename", script) or ""),  # inline scripts: None or ''
               repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _theme_mode(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """With no mode configured the theme writes ``data-mode=""`` and logs a console error."""
    context["default_mode"] = context.get("default_mode") or "auto"


def setup(app: Sphinx) -> dict:
    app.add_role("exercise-links", _exercise_links_role)
    app.connect("html-page-context", _drop_duplicate_scripts)
    app.connect("html-page-context", _theme_mode)
    app.connect("html-page-context", _point_buttons, priority=900)  # after sphinx-book-theme's
    return {"parallel_read_safe": True, "parallel_write_safe": True}
