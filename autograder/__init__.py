"""Course toolkit for "From one-hot to KV cache".

- :mod:`autograder.chapters` — per chapter: the public checks students run in their notebook
  and the hidden cases the grader runs (``CASES``, keyed by nbgrader ``grade_id``), written in
  :mod:`autograder.checks` (calling student code, comparing with hints, seeded inputs),
  :mod:`autograder.spec` (cases, verdicts) and :mod:`autograder.compare` (device-aware
  tolerances); chapter modules never import one another.
- How a grade travels: :mod:`autograder.sandbox` (the sandbox) → :mod:`autograder.process`
  (a notebook's kernel in it, called from outside) → :mod:`autograder.grading` (hidden cases
  judged in the grader) → :mod:`autograder.nbgrader_plugin` (nbgrader's autograde step) →
  :mod:`autograder.course` (one submission of a course, its gradebook score) →
  :mod:`autograder.parallel` / :mod:`autograder.cluster` (many at once) → :mod:`autograder.cli`
  (the instructor commands, ``python -m autograder --help``).
"""

import sys as _sys

# jsonschema (through nbformat) imports rfc3987_syntax where installed, for IRI format checks that
# notebook validation never makes; it builds a grammar at import: 1 s in every grading process.
_sys.modules.setdefault("rfc3987_syntax", None)
