"""The helpers every chapter's public checks and hidden cases are written with.

:mod:`autograder.spec` says what a check and a case are; this module is the vocabulary they
share, so that no chapter module imports another (each chapter can be read, changed and
graded on its own):

* calling student code: :func:`call` (a crash becomes a sentence), :func:`outcome` and
  :func:`raised` (an exception becomes a result the grader can compare);
* comparing: :func:`expect_example` (a difference, the example's explanation and the hints
  that recognise the mistake), :func:`close` (does a result match a formula);
* coercing results: :func:`as_tensor`, :func:`cpu64`, :func:`tensor_pair`,
  :func:`real_positions`, :func:`param_shapes`;
* random inputs from the grader's seeded generator (never the global RNG): :func:`randint`,
  :func:`pick`, :func:`randn`; a public check's own random set-up: :func:`seeded`.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable

import torch

from .compare import describe_difference
from .mistakes import public_hints, raised_kind, record
from .spec import CheckFailed, Hint, error_hint


# ----------------------------------------------------------------------------------------
# Calling student code
# ----------------------------------------------------------------------------------------

def call(fn: Callable, shown: str, *args: Any) -> Any:
    """Run the student's function; a stub or a crash becomes a sentence, not only a traceback."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise CheckFailed(f"{shown} raised NotImplementedError: replace `raise NotImplementedError()` "
                          "with your code (in this function or in one it calls) "
                          "and run the cell again") from None
    except Exception as error:  # the chained traceback still points into the student's code
        message = f"{type(error).__name__}: {error}"
        record(shown, f"raised {message}")
        hints = public_hints(sys._getframe(1), shown, f"raised {message}") or [error_hint(message)]
        raise CheckFailed("\n".join([f"{shown} raised {message}",
                                      *(f"Hint: {hint}" for hint in hints if hint)])) from error


def outcome(thunk: Callable[[], Any]) -> Any:
    """``thunk()``'s value, or ``"raised <Error>: <message>"`` when it raises (the grader can
    compare a string; a raised exception would end the case without a hint).

    NotImplementedError is re-raised, so an unwritten exercise still reads "not written yet".
    """
    try:
        return thunk()
    except NotImplementedError:
        raise
    except Exception as error:
        return f"raised {type(error).__name__}: {error}"


def raised(x: Any, name: str = "") -> bool:
    """Whether ``x`` is :func:`outcome`'s report of an exception (of type ``name``, if given)."""
    kind = raised_kind(x)
    return kind is not None and name in ("", kind)


def same_error(got: Any, expected: Any, args: tuple = ()) -> str | None:
    """A case's check where the reference may raise (the case's adapter reports through
    :func:`outcome`): an exception of the reference's type passes, whatever its message (the
    student's own words); another type, or a result where an exception was due, fails."""
    want, have = raised_kind(expected), raised_kind(got)
    if want is None:
        return f"your code {got}" if have else describe_difference(got, expected)
    if have == want:
        return None
    return f"expected a {want}, but your code {got}" if have else f"expected a {want}, got a result"


# ----------------------------------------------------------------------------------------
# Comparing
# ----------------------------------------------------------------------------------------

def expect_example(got: Any, expected: Any, shown: str, why: str = "",
                   hints: tuple[Hint, ...] = (), args: tuple = ()) -> None:
    """:func:`expect` with the example's explanation and the hints for the mistake: those of the
    catalogue mistakes whose result on this example is ``got`` (:mod:`autograder.mistakes`), else
    the chapter's ``hints`` that recognise it; the explanation is labelled as such, so it is not
    mistaken for a diagnosis."""
    record(shown, got)
    message = describe_difference(got, expected, shown)
    if message is None:
        return
    found = (public_hints(sys._getframe(1), shown, got)
             or list(dict.fromkeys(h.text for h in hints if h.matches(got, expected, args))))
    raise CheckFailed("\n".join([message, *([f"About this example: {why}"] if why else []),
                                  *(f"Hint: {text}" for text in found)]))


def expect_shape(x: Any, shape: tuple, shown: str) -> None:
    """``x`` must be a tensor of ``shape``; else say so, with the catalogue mistakes that give
    its shape here (a public check's shape test before its values)."""
    got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
    record(shown, got)
    if got != shape:
        hints = public_hints(sys._getframe(1), shown, got)
        raise CheckFailed("\n".join([f"{shown}: expected a tensor of shape {shape}, got {got}",
                                      *(f"Hint: {hint}" for hint in hints)]))


def close(got: Any, target: torch.Tensor) -> bool:
    """``got`` has ``target``'s shape and values (loosely: it identifies a formula, not a grade)."""
    t = as_tensor(got)
    return (t is not None and t.shape == target.shape and t.dtype.is_floating_point
            and torch.allclose(t.double(), target.detach().cpu().double(), rtol=1e-4, atol=1e-5))


# ----------------------------------------------------------------------------------------
# Coercing results (a student's result may be anything: these never raise on odd input)
# ----------------------------------------------------------------------------------------

def as_tensor(x: Any) -> torch.Tensor | None:
    """``x`` detached on the CPU, or None when it is not a tensor (a hint can then say no)."""
    return x.detach().cpu() if isinstance(x, torch.Tensor) else None


def cpu64(x: torch.Tensor) -> torch.Tensor:
    """``x`` detached, on the CPU, in float64: where reference formulas are computed."""
    return x.detach().cpu().double()


def tensor_pair(x: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``x`` as a pair of tensors on the CPU (e.g. (padded, mask) or (output, state)), or None."""
    if isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, torch.Tensor) for t in x):
        return as_tensor(x[0]), as_tensor(x[1])
    return None


def real_positions(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) bool on the CPU: True at the real positions t < lengths[i], False at padding."""
    return torch.arange(T) < lengths.cpu()[:, None]


def param_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """A student module's parameters as name -> shape: what a check compares with the exercise's
    table before it fills in weights."""
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


# ----------------------------------------------------------------------------------------
# Random inputs: from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def seeded(seed: int = 0):
    """Run a public check's own random set-up (a module's initial weights) from ``seed``, so its
    examples are the same in every notebook (the catalogue's results on them are shipped as data),
    and leave the student's global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """A random int in [lo, hi)."""
    return int(torch.randint(lo, hi, (1,), generator=g))


def pick(g: torch.Generator, seq: Any) -> Any:
    """A random element of ``seq``."""
    return seq[randint(g, 0, len(seq))]


def randn(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32,
          scale: float = 1.0) -> torch.Tensor:
    """A standard normal tensor of ``shape`` and ``dtype``, times ``scale``."""
    return torch.randn(*shape, generator=g, dtype=dtype) * scale
