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

import re
import sys

import torch

from .compare import describe_difference
from .mistakes import public_hints, raised_kind, record


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
class Verdict:
    """Why a case failed: what differs, and the hints for the mistakes recognised in it, kept apart
    so that a report never takes text from a student's result for a hint. ``str()`` is what the
    student reads."""

    message: str
    hints: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"Hint: {text}" for text in self.hints)])

    def __contains__(self, words: str) -> bool:
        return words in str(self)


@dataclass(frozen=True)
class Case:
    """One call of student code, judged against the reference on the same random input.

    ``call`` is the adapter: a Python expression evaluated in the notebook's namespace that
    yields a callable, e.g. ``"one_hot"`` or ``"lambda t, v: decode(encode(t, v), v)"``, so a
    case never depends on how a student structured the rest of the notebook.
    ``make_args(g)`` builds the positional arguments on the CPU from a seeded generator; the
    grader moves tensors to the grading device before the call. ``check(got, expected, args)``
    returns a message or ``None``; by default values must match within
    :mod:`autograder.compare`'s tolerances. A check compares ``got`` with ``expected``, never
    judges ``got`` alone: the diagnosis calls it on a mistake's result in place of the reference's
    to find the student's mistake.
    """

    call: str
    make_args: Callable[[torch.Generator], tuple]
    label: str
    hints: tuple[Hint, ...] = field(default=())
    check: Callable[[Any, Any, tuple], str | None] | None = None

    def difference(self, got: Any, expected: Any, args: tuple) -> Verdict | None:
        """``None`` if ``got`` passes, else how it differs (no hints)."""
        message = (self.check or _default_check)(got, expected, args)
        if message is None:
            return None
        if raised_kind(got) and not raised_kind(expected):  # the student's own error, not a wrapper's
            hint = error_hint(got.removeprefix("raised "))
            return Verdict(f"your code {got}", (hint,) if hint else ())
        return Verdict(message)

    def judge(self, got: Any, expected: Any, args: tuple) -> Verdict | None:
        """``None`` if ``got`` passes, else the message and the hints that apply."""
        verdict = self.difference(got, expected, args)
        if verdict is None or verdict.hints:
            return verdict
        return Verdict(verdict.message, tuple(h.text for h in self.hints if h.matches(got, expected, args)))


def _default_check(got: Any, expected: Any, args: tuple) -> str | None:
    return describe_difference(got, expected)


def expect(got: Any, expected: Any, what: str, hints: Sequence[str] = ()) -> None:
    """Public-check assertion: raise :class:`CheckFailed` saying how ``got`` differs, with the
    hints of the catalogue mistakes that give ``got`` here, else ``hints``."""
    record(what, got)
    message = describe_difference(got, expected, what)
    if message is not None:
        known = public_hints(sys._getframe(1), what, got)
        raise CheckFailed(str(Verdict(message, tuple(known or hints))))


def passed(name: str, count: int) -> None:
    """Tell the student a public check went through, and what it does not prove."""
    print(f"✓ {name}: {count} public check{'s' if count != 1 else ''} passed "
          "(the grader also compares your code with the reference on hidden random inputs)")


# Exceptions students commonly hit, recognised from their message: (pattern, hint).
_ERROR_HINTS = (
    (r"same dtype|expected scalar type|must have the same dtype|dtype.*!=|"
     r"found dtype|Float and Double|Double and Float|Long and Float|Float and Long",
     "two tensors of different dtypes met in one operation: convert one with "
     ".to(other.dtype) (e.g. cast a one-hot or a mask to the weights' dtype) rather than "
     "assuming float32."),
    (r"shapes cannot be multiplied|must match the size of tensor|mat1 and mat2 shapes|"
     r"size mismatch|cannot be broadcast|not broadcastable|"
     r"Expected size for first two dimensions of batch2 tensor",  # a batched @ that does not fit
     "the shapes of a product or an elementwise operation do not fit: write each tensor's shape "
     "next to the line (e.g. # (B, T, C)); a transposed weight or a wrong reshape is the usual cause."),
    (r"same device|Expected all tensors to be on",
     "tensors on different devices met: create new tensors on the input's device "
     "(torch.zeros(..., device=x.device), torch.arange(n, device=x.device))."),
    (r"UnicodeDecodeError|codec can't decode",
     "bytes that are not valid UTF-8 (e.g. a character split across tokens) must not raise: join "
     "all the bytes first, then .decode('utf-8', errors='replace')."),
    (r"Class values must be smaller than num_classes",
     "an id is not below num_classes: one-hot vectors for ids that index the rows of a (V, d) "
     "matrix need num_classes = V, its number of rows."),
    (r"Expected target size",
     "F.cross_entropy wants the classes in dimension 1: logits (B, V, T) with targets (B, T), so "
     "transpose the (B, T, V) logits (logits.transpose(1, 2)), or flatten both "
     "(logits.reshape(-1, V), targets.reshape(-1))."),
    (r"without overflow|value cannot be converted to type",
     "a constant does not fit the tensor's dtype (float16 ends near 65504): mask with "
     "float('-inf') or torch.finfo(x.dtype).min, not a literal such as -1e9."),
    (r"out of bounds|index out of range|out of range",
     "an index is out of range: compare the indices you use with the size of the dimension "
     "they index."),
)


def error_hint(error: str) -> str | None:
    """A hint for a common exception, from its message (``"RuntimeError: ..."``), or ``None``."""
    return next((hint for pattern, hint in _ERROR_HINTS if re.search(pattern, error)), None)


def show_input(args: tuple, limit: int = 240) -> str | None:
    """The arguments of a case as the student could type them, when they are small."""
    def show(x: Any) -> str:
        if isinstance(x, torch.Tensor):
            if x.numel() > 32:
                raise ValueError
            dtype = "" if x.dtype in (torch.float32, torch.int64, torch.bool) else f", dtype={x.dtype}"
            return f"torch.tensor({x.tolist()}{dtype})"
        if isinstance(x, (list, tuple)):
            inner = ", ".join(show(v) for v in x)
            return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
        if isinstance(x, dict):
            return "{" + ", ".join(f"{k!r}: {show(v)}" for k, v in x.items()) + "}"
        if isinstance(x, (str, bytes, int, float, bool, type(None))):
            return repr(x)
        raise ValueError  # a module, a generator …: not worth showing

    try:
        text = ", ".join(show(a) for a in args)
    except (ValueError, TypeError):
        return None
    return text if len(text) <= limit else None
