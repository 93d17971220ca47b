"""The vocabulary chapter test modules are written in.

A chapter module (``autograder/chapters/chNN_*.py``) holds two things:

* public checks, plain functions a student calls in their notebook on their own function.
  They use :func:`expect`, which raises :class:`CheckFailed` with a sentence, never a bare
  ``AssertionError``;
* ``CASES``: for each nbgrader test cell (by ``grade_id``), the hidden :class:`Case` list the
  grader runs on the student's notebook and on the reference notebook, each in its own
  process, comparing the two results outside both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .compare import describe_difference


class CheckFailed(AssertionError):
    """A public check failed; the message says what to fix."""


@dataclass(frozen=True)
class Hint:
    """A likely mistake: shown when ``applies(got, expected, args)`` is true for a failed case."""

    text: str
    applies: Callable[[Any, Any, tuple], bool]

    def matches(self, got: Any, expected: Any, args: tuple) -> bool:
        """Whether the mistake is recognised; odd student output that breaks ``applies`` is not."""
        try:
            return bool(self.applies(got, expected, args))
        except Exception:
            return False


@dataclass(frozen=True)
class Case:
    """One call of student code, judged against the reference on the same random input.

    ``call`` is the adapter: a Python expression evaluated in the notebook's namespace that
    yields a callable, e.g. ``"one_hot"`` or ``"lambda t, v: decode(encode(t, v), v)"``, so a
    case never depends on how a student structured the rest of the notebook.
    ``make_args(g)`` builds the positional arguments on the CPU from a seeded generator; the
    grader moves tensors to the grading device before the call. ``check(got, expected, args)``
    returns a message or ``None``; by default values must match within
    :mod:`autograder.compare`'s tolerances.
    """

    call: str
    make_args: Callable[[torch.Generator], tuple]
    label: str
    hints: tuple[Hint, ...] = field(default=())
    check: Callable[[Any, Any, tuple], str | None] | None = None

    def judge(self, got: Any, expected: Any, args: tuple) -> str | None:
        """``None`` if ``got`` passes, else the message followed by the hints that apply."""
        message = (self.check or _default_check)(got, expected, args)
        if message is None:
            return None
        hints = [h.text for h in self.hints if h.matches(got, expected, args)]
        return "\n".join([message, *(f"Hint: {text}" for text in hints)])


def _default_check(got: Any, expected: Any, args: tuple) -> str | None:
    return describe_difference(got, expected)


def expect(got: Any, expected: Any, what: str, hints: Sequence[str] = ()) -> None:
    """Public-check assertion: raise :class:`CheckFailed` saying how ``got`` differs."""
    message = describe_difference(got, expected, what)
    if message is not None:
        raise CheckFailed("\n".join([message, *(f"Hint: {text}" for text in hints)]))


def passed(name: str, count: int) -> None:
    """Tell the student a public check went through, and what it does not prove."""
    print(f"✓ {name}: {count} public check{'s' if count != 1 else ''} passed "
          "(the grader also compares your code with the reference on hidden random inputs)")
