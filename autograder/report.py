"""The instructor's report on one graded assignment: one HTML page and a CSV.

Read after ``autograde``: how the scores spread, which exercises the class failed, the failure
messages and hints most students hit (the common mistakes to address in class), the submissions
that timed out, crashed or needed an editor repair, and the slowest ones. Everything comes from
the gradebook and from the journal ``autograde`` keeps in the course directory
(``.autograde-ASSIGNMENT.jsonl``), which holds each test cell's record as data: no text is parsed,
so nothing a student's code prints or raises can pass for a hint, a timeout or a crash, and
nothing is read from autograded/, where nbgrader copies whatever a submission folder holds.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from nbgrader.api import Gradebook

from . import csvsafe, parallel

# the journal's kinds of problem as the report names them; the test cells' own problems
# ("timeout", "crash", "budget") keep their names
PROBLEM_NAMES = {"repaired": "editor repair", "failed": "nbgrader failed"}


def _headline(message: str) -> str:
    """A failure message's first line with numbers as '#', so that the same mistake on different
    inputs counts once."""
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "#", message.split("\n", 1)[0])[:200]


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table(header: list[str], rows: list) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>" if rows else "<p>none</p>"


def build(course: Path, db_url: str, course_id: str, assignment: str, top: int = 10) -> tuple[Path, Path]:
    """Write ``report-ASSIGNMENT.html`` and ``report-ASSIGNMENT.csv`` into ``course`` (submissions
    the journal does not list, graded by plain ``nbgrader autograde``, show scores only)."""
    journal = parallel.Journal(course / f".autograde-{assignment}.jsonl", {}).done
    students, exercises = {}, {}  # student -> row; grade_id -> max score
    with Gradebook(db_url, course_id) as gb:
        for submission in gb.assignment_submissions(assignment):
            row = {"score": submission.score, "max_score": submission.max_score, "cells": {}}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    row["cells"][grade.name] = grade.score
                    exercises[grade.name] = grade.max_score
            students[submission.student.id] = row
    if not students:
        raise SystemExit(f"no graded submissions of {assignment}: run autograde first")

    messages, hints, found = Counter(), Counter(), Counter()  # (exercise, text) -> number of students
    unmatched: dict[str, list] = {}  # exercise -> [students, one of their failure messages]
    for student, row in students.items():
        entry = journal.get(student, {})
        records = [record for cells in entry.get("cells", {}).values() for record in cells]
        failed = [(record["grade_id"], failure) for record in records for failure in record["failures"]]
        messages.update({(gid, _headline(failure["message"])) for gid, failure in failed})
        hints.update({(gid, hint) for gid, failure in failed for hint in failure["hints"]})
        found.update({(r["grade_id"], " + ".join(combo)) for r in records for combo in r.get("mistakes", [])})
        hints.update({(r["grade_id"], r["diagnosis"]) for r in records if r.get("mistakes")})
        for record in records:
            if record.get("unmatched"):
                seen = unmatched.setdefault(record["grade_id"], [0, record["failures"][0]["message"]])
                seen[0] += 1
        kinds = [kind for record in records for kind in record["problems"]] + [entry.get("kind", "")]
        row["problems"] = [PROBLEM_NAMES.get(kind, kind) for kind in dict.fromkeys(kinds) if kind]
        row["seconds"] = entry.get("seconds")

    names = sorted(exercises)
    csv_path = course / f"report-{assignment}.csv"
    with csv_path.open("w", newline="") as f:
        out = csvsafe.writer(f)
        out.writerow(["student", "score", "max_score", *names, "problems", "seconds"])
        for student, row in sorted(students.items()):
            out.writerow([student, f"{row['score']:g}", f"{row['max_score']:g}",
                          *(f"{row['cells'].get(n, 0):g}" for n in names),
                          "; ".join(row["problems"]), "" if row["seconds"] is None else f"{row['seconds']:.1f}"])

    max_score = max(r["max_score"] for r in students.values())
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.hist([r["score"] for r in students.values()], bins=min(20, max(5, int(max_score) * 2)),
            range=(0, max_score), color="#4477aa", edgecolor="white")
    ax.set(xlabel="score", ylabel="students", title=f"{assignment}: scores of {len(students)} submissions")
    histogram = _png(fig)
    passed = {n: sum(r["cells"].get(n, 0) >= exercises[n] for r in students.values()) for n in names}
    fig = Figure(figsize=(6, 0.4 * len(names) + 1))
    ax = fig.subplots()
    ax.barh(names, [100 * passed[n] / len(students) for n in names], color="#228833")
    ax.set(xlabel="% of students with full marks", xlim=(0, 100), title="exercises")
    ax.invert_yaxis()
    rates = _png(fig)

    troubled = sorted((s, ", ".join(r["problems"])) for s, r in students.items() if r["problems"])
    timed = sorted(((s, r["seconds"]) for s, r in students.items() if r["seconds"] is not None),
                   key=lambda x: -x[1])[:top]
    scores = [r["score"] for r in students.values()]
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(assignment)}: grading report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}</style></head><body>
<h1>{html.escape(assignment)}: grading report</h1>
<p id="counts">{len(students)} submissions; mean score {sum(scores) / len(scores):.2f} of {max_score:g};
{sum(s >= max_score for s in scores)} with full marks; {len(troubled)} with a problem.</p>
<h2>Scores</h2><img alt="Histogram of the scores" src="{histogram}">
<h2>Exercises</h2><img alt="Share of students with full marks on each exercise" src="{rates}">
{_table(["exercise", "students with full marks", "mean score", "max"],
        [(n, f"{passed[n]} of {len(students)}",
          f"{sum(r['cells'].get(n, 0) for r in students.values()) / len(students):.2f}", f"{exercises[n]:g}")
         for n in names])}
<h2>Most common hints</h2>
{_table(["exercise", "hint", "students"], [(g, t, c) for (g, t), c in hints.most_common(top)])}
<h2>Typical mistakes found</h2>
<p>Submissions whose results on every hidden check of an exercise are those of a mistake of the
catalogue (<code>solutions/ASSIGNMENT/mistakes.yaml</code>), one or two at once.</p>
{_table(["exercise", "mistake", "students"], [(g, m, c) for (g, m), c in found.most_common()])}
<h2>Failures that matched no known mistake</h2>
<p>Mistakes the catalogue lacks: consider adding them, so that later students get their hint.</p>
{_table(["exercise", "students", "one of their failures"], [(g, c, m) for g, (c, m) in sorted(unmatched.items())])}
<h2>Most common failure messages</h2>
{_table(["exercise", "message (numbers shown as #)", "students"], [(g, t, c) for (g, t), c in messages.most_common(top)])}
<h2>Submissions with a timeout, crash, repair or unreadable file</h2>
{_table(["student", "problems"], troubled)}
<h2>Slowest submissions</h2>
{_table(["student", "seconds to grade"], [(s, f"{t:.1f}") for s, t in timed])}
</body></html>
"""
    html_path = course / f"report-{assignment}.html"
    html_path.write_text(page)
    return html_path, csv_path
