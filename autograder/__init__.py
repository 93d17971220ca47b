"""Course toolkit for "From one-hot to KV cache".

- :mod:`autograder.chapters` — per chapter: the public checks students run in their notebook
  and the hidden cases the grader runs (``CASES``, keyed by nbgrader ``grade_id``).
- :mod:`autograder.spec`, :mod:`autograder.compare` — how checks are written and how results
  are compared (device-aware tolerances).
- :mod:`autograder.sandbox` → :mod:`autograder.grading` → :mod:`autograder.nbgrader_plugin` —
  how a grade travels: student code runs in its own limited process, the grader compares its
  results with the reference's, and nbgrader stores the scores in its gradebook.
- :mod:`autograder.cli` — the instructor commands (``python -m autograder --help``).
"""

import sys as _sys

# jsonschema (through nbformat) imports rfc3987_syntax where installed, for IRI format checks that
# notebook validation never makes; it builds a grammar at import: 1 s in every grading process.
_sys.modules.setdefault("rfc3987_syntax", None)
