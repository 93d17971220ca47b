"""CSV files a TA can open in a spreadsheet without running what a student wrote in them.

Student ids, names and problem texts come from students; a spreadsheet evaluates a cell that
starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return before one) as a formula.
Following OWASP's advice on CSV injection, such a text cell gets a leading single quote, which
spreadsheets show as text; numbers (``-0.5`` included) stay numbers. Every CSV the course writes
goes through :class:`writer`: the summary of ``autograde``, the report's table and the export.
"""

from __future__ import annotations

import csv
import re

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins.export import CsvExportPlugin

_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def cell(value):
    """``value`` as a spreadsheet shows it: text that would start a formula is quoted."""
    if isinstance(value, str) and value.startswith(_FORMULA) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


class writer:  # noqa: N801 (used like csv.writer)
    """``csv.writer`` for ``f`` (opened with ``newline=""``) whose cells pass through :func:`cell`."""

    def __init__(self, f):
        self._out = csv.writer(f)

    def writerow(self, row) -> None:
        self._out.writerow([cell(v) for v in row])

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)


class CsvExport(CsvExportPlugin):
    """nbgrader's CSV export (same columns, same zeros for missing submissions), written through
    :class:`writer`: nbgrader's own writes text cells unquoted and unchecked."""

    KEYS = ("assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
            "raw_score", "late_submission_penalty", "score", "max_score")

    def export(self, gradebook: Gradebook) -> None:
        dest = self.to or "grades.csv"
        self.log.info("Exporting grades to %s", dest)
        students = {str(s) for s in self.student}
        assignments = {str(a) for a in self.assignment}
        with open(dest, "w", newline="") as f:
            out = writer(f)
            out.writerow(self.KEYS)
            for assignment in gradebook.assignments:
                if assignments and assignment.name not in assignments:
                    continue
                for student in gradebook.students:
                    if students and student.id not in students:
                        continue
                    try:
                        sub = gradebook.find_submission(assignment.name, student.id)
                        graded = (sub.timestamp, sub.score, sub.late_submission_penalty,
                                  max(0.0, sub.score - sub.late_submission_penalty))
                    except MissingEntry:
                        graded = ("", 0.0, 0.0, 0.0)
                    row = (assignment.name, assignment.duedate, graded[0], student.id, student.last_name,
                           student.first_name, student.email, *graded[1:], assignment.max_score)
                    out.writerow(["" if v is None else v for v in row])
