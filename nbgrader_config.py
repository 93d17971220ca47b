# nbgrader configuration of the course (the repository root is the nbgrader course directory).
# Names follow nbgrader's conventions, with two folders renamed to what they hold here.
from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput,
                                    DeduplicateIds, IgnorePattern, LimitOutput, OverwriteCells,
                                    OverwriteKernelspec, SaveAutoGrades)

from autograder.nbgrader_plugin import RepairSubmission, SandboxGrade

c = get_config()  # noqa: F821 (injected by traitlets)

c.CourseDirectory.course_id = "one-hot-to-kv-cache"
c.CourseDirectory.source_directory = "solutions"   # reference notebooks, nbgrader source format
c.CourseDirectory.release_directory = "exercises"  # student versions, generated, never hand-edited
# Each assignment's catalogue of typical mistakes (patches of the reference) stays with the
# instructor: never released with the exercise.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "mistakes.yaml"]
# submitted/, autograded/, feedback/ and gradebook.db keep nbgrader's default names (git-ignored).
# The gradebook is SQLite; for PostgreSQL set c.CourseDirectory.db_url (README, "Database").

# Repair what students' editors do to a notebook (pasted cells, stripped metadata, deleted test
# cells) before nbgrader's own checks, which would otherwise fail on the whole notebook.
c.Autograde.sanitize_preprocessors = [
    RepairSubmission,
    ClearOutput,
    DeduplicateIds,
    OverwriteKernelspec,
    OverwriteCells,
    CheckCellMetadata,
]
# Grade outside the student's kernel: SandboxGrade replaces nbgrader's Execute; the rest of
# nbgrader's autograde pipeline is unchanged.
c.Autograde.autograde_preprocessors = [
    SandboxGrade,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
c.SandboxGrade.device = "cpu"  # or pass --device cuda to `python -m autograder autograde`

# Feedback and formgrader pages show student markdown and outputs without running any of it.
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.filters = {"markdown2html": "autograder.html.markdown2html",
                          "clean_html": "autograder.html.clean_html"}
c.HTMLExporter.preprocessors = ["autograder.html.NumericImageSizes"]  # image outputs' width/height
# Feedback pages typeset formulas with the course's own MathJax, not nbgrader's CDN copy.
c.GenerateFeedback.exporter_class = "autograder.feedback_mathjax.FeedbackExporter"

# CSVs a TA opens in a spreadsheet: no student text starts a formula (`nbgrader export` too).
c.ExportApp.plugin_class = "autograder.csvsafe.CsvExport"
