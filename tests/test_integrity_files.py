"""Attack class: reading and writing files outside the sandbox's scratch folder.

A reader looks for the reference notebook, a classmate's submission, the gradebook, the
course's config and ``.git``, a secret in the grader's home folder and in the host's ``/tmp``:
none is there. A writer tries to change what the grader or later kernels will run (the
course's ``nbgrader_config.py``, a ``.pth`` file in the Python environment, the course package
with the hidden cases, the exercise folder, the host's ``/tmp``): each is refused and every
file is byte-identical afterwards. Both report what they saw through the error ``one_hot``
raises; the reader would run the reference's ``one_hot`` if it could read it.
"""

from __future__ import annotations

import hashlib
import sysconfig
import uuid
from pathlib import Path

import pytest

from autograder.sandbox import package_dir
from conftest import ASSIGNMENT, grade_class, make_submission, observations

FULL = 10.0
READER = '''
import json, os
OBS = {{}}
for name, path in {paths!r}.items():
    try:
        open(path, "rb").read() if not os.path.isdir(path) else os.listdir(path)
        OBS[name] = "read"
    except Exception as exc:
        OBS[name] = type(exc).__name__

def one_hot(ids, num_classes):
    try:
        reference = json.load(open({reference!r}))
    except Exception:
        raise RuntimeError("OBS" + json.dumps(OBS) + "SBO")
    namespace = {{"torch": torch}}
    exec(next("".join(c["source"]) for c in reference["cells"] if "def one_hot(" in "".join(c["source"])),
         namespace)
    return namespace["one_hot"](ids, num_classes)
'''
WRITER = '''
import json
OBS = {{}}
for name, (path, mode, text) in {targets!r}.items():
    try:
        with open(path, mode) as f:
            f.write(text)
        OBS[name] = "written"
    except Exception as exc:
        OBS[name] = type(exc).__name__

def one_hot(ids, num_classes):
    raise RuntimeError("OBS" + json.dumps(OBS) + "SBO")
'''


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    token = uuid.uuid4().hex[:8]
    home_secret = Path.home() / f".autograder-test-secret-{token}"
    host_tmp_secret = Path("/tmp") / f"autograder-test-secret-{token}"
    (course / ".git").mkdir(exist_ok=True)
    (course / ".git" / "config").write_text("[core]\n")
    reference = course / "solutions" / ASSIGNMENT / "tokens.ipynb"
    reads = {
        "reference notebook": str(reference),
        "classmate's submission": str(course / "submitted" / "classmate" / ASSIGNMENT / "tokens.ipynb"),
        "gradebook": str(course / "gradebook.db"),
        "course config": str(course / "nbgrader_config.py"),
        "course .git": str(course / ".git" / "config"),
        "course directory": str(course),
        "grader's home": str(home_secret),
        "host /tmp": str(host_tmp_secret),
    }
    package = Path(package_dir())
    site = Path(sysconfig.get_paths()["purelib"])
    writes = {  # harmless payloads: comments, so a failed defence breaks nothing
        "course config": (str(course / "nbgrader_config.py"), "a", "\n# written by a student\n"),
        "python environment (.pth)": (str(site / f"autograder-attack-{token}.pth"), "w", "# a student's .pth\n"),
        "course package": (str(package / "chapters" / "ch01_tokens.py"), "a", "\n# written by a student\n"),
        "exercise folder": (str(course / "exercises" / ASSIGNMENT / "tokens.ipynb"), "a", " "),
        "host /tmp": (str(Path("/tmp") / f"autograder-attack-{token}"), "w", "a student's file\n"),
    }
    protected = [Path(path) for path, _, _ in writes.values() if not path.startswith("/tmp/")]
    before = {p: _digest(p) for p in protected}
    home_secret.write_text("the grader's secret\n")
    host_tmp_secret.write_text("a secret in the host's /tmp\n")
    try:
        submissions = {
            "classmate": make_submission(course),
            "reader": make_submission(course, replace={"one_hot": READER.format(paths=reads, reference=str(reference))}),
            "writer": make_submission(course, replace={"one_hot": WRITER.format(targets=writes)}),
        }
        summary = grade_class(course, ASSIGNMENT, submissions, tmp_path_factory.mktemp("downloads"))
        after = {p: _digest(p) for p in protected}
        planted_tmp = Path(writes["host /tmp"][0]).exists()
    finally:
        home_secret.unlink()
        host_tmp_secret.unlink()
        Path(writes["python environment (.pth)"][0]).unlink(missing_ok=True)
        Path(writes["host /tmp"][0]).unlink(missing_ok=True)
    return summary, before, after, planted_tmp


def test_nothing_outside_the_sandbox_can_be_read(graded):
    summary, *_ = graded
    seen = observations(summary["reader"]["report"]["test_one_hot"])
    assert len(seen) == 8 and set(seen.values()) == {"FileNotFoundError"}, seen
    assert summary["reader"]["score"] == FULL - 1 - 1  # one_hot, and embed which calls it


def test_writes_outside_the_sandbox_are_refused_and_change_nothing(graded):
    summary, before, after, planted_tmp = graded
    seen = observations(summary["writer"]["report"]["test_one_hot"])
    assert seen["host /tmp"] == "written"  # into the sandbox's own /tmp ...
    assert not planted_tmp  # ... which is not the host's
    refused = {name: outcome for name, outcome in seen.items() if name != "host /tmp"}
    # not there, a read-only file system (OSError), or not the sandbox user's to write (PermissionError)
    assert len(refused) == 4 and all(o in {"FileNotFoundError", "OSError", "PermissionError"} for o in refused.values()), seen
    assert after == before
    assert summary["writer"]["score"] == FULL - 1 - 1


def test_a_classmate_graded_in_the_same_run_is_unaffected(graded):
    summary, *_ = graded
    assert summary["classmate"]["score"] == FULL, summary["classmate"]["report"]
