"""Typical mistakes as code: each one a small patch of the reference notebook.

A chapter's catalogue is ``solutions/NN-name/mistakes.yaml``, beside its reference (nbgrader does
not release it: ``nbgrader_config.py`` ignores the file, and the installed package never holds
it)::

    uses:                       # test cell -> the exercises whose code its cases also run
      test_self_attention: [test_scaled_dot_product_attention, test_softmax]
    mistakes:
      - id: no-scale
        exercise: test_scaled_dot_product_attention   # the test cell it must fail
        patch:                                          # each text once in the solution cells
          - replace: "/ math.sqrt(d_k)"
            with: ""
        hint: the scores are not divided by √d_k …

The grader runs the reference with each mistake patched in, on the hidden inputs, and shows a
hint only when a student's results are that mistake's results (:mod:`autograder.grading`); the
public checks compare with the same mistakes' results on their examples, computed here once and
shipped as data (:func:`record_public`, ``python -m autograder catalogue``). One definition per
mistake, so the notebook and the grader cannot disagree about it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

if TYPE_CHECKING:  # the public checks import this module too: nothing heavy at run time
    import nbformat

FILE = "mistakes.yaml"
PUBLIC = Path(__file__).parent / "data" / "mistakes"  # <chapter module>.pt: what the public checks read


@dataclass(frozen=True)
class Mistake:
    """One typical mistake: ``patch`` turns the reference into code that makes it."""

    id: str
    exercise: str  # grade_id of the test cell it must fail
    hint: str
    patch: tuple[tuple[str, str], ...]  # (reference text, mistaken text)
    part: str = ""  # grade_id of the solution cell it patches (set by :func:`load`)


@dataclass(frozen=True)
class Raised:
    """A call that raised (or did not finish): its error as the grader reports it."""

    error: str

    @property
    def kind(self) -> str | None:
        """The exception's type name (``raised ValueError: …`` -> ``ValueError``); None when the
        call did not raise but hung, crashed or ran out of budget."""
        return raised_kind(self.error)


def raised_kind(x: Any) -> str | None:
    """The exception's type name in a ``"raised <Type>: <message>"`` result (how adapters and
    the grader report a call that raised); None for any other value."""
    found = re.match(r"raised ([\w.]+)", x) if isinstance(x, str) else None
    return found.group(1) if found else None


@dataclass(frozen=True)
class Catalogue:
    mistakes: tuple[Mistake, ...] = ()
    uses: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.mistakes)

    def scope(self, mistake: Mistake) -> list[str]:
        """The test cells whose cases run the code ``mistake`` patches."""
        return [mistake.exercise, *(g for g, parts in self.uses.items() if mistake.exercise in parts)]

    def of(self, grade_id: str) -> list[Mistake]:
        """The mistakes that can show in ``grade_id``'s cases: its own, then its parts'."""
        return sorted((m for m in self.mistakes if grade_id in self.scope(m)), key=lambda m: m.exercise != grade_id)

    def by_id(self, ids: Sequence[str]) -> tuple[Mistake, ...]:
        table = {m.id: m for m in self.mistakes}
        return tuple(table[i] for i in ids)

    def pairs(self, reference: nbformat.NotebookNode, mistakes: Sequence[Mistake]) -> list[tuple[str, str]]:
        """Pairs of ``mistakes`` whose patches apply together to ``reference`` (two mistakes at once)."""
        def together(a: Mistake, b: Mistake) -> bool:
            try:
                patched(reference, [a, b])
                return True
            except ValueError:
                return False

        return [(a.id, b.id) for a, b in itertools.combinations(mistakes, 2) if together(a, b)]


def solution_cells(nb: nbformat.NotebookNode) -> dict[int, str]:
    """cell index -> grade_id of the notebook's solution cells."""
    return {i: c.metadata.nbgrader["grade_id"] for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.get("metadata", {}).get("nbgrader", {}).get("solution")}


def load(folder: Path, reference: nbformat.NotebookNode) -> Catalogue:
    """The catalogue beside ``reference`` (empty when there is none), every patch checked to
    apply once to one solution cell."""
    import yaml

    path = Path(folder) / FILE
    if not path.is_file():
        return Catalogue()
    data = yaml.safe_load(path.read_text()) or {}
    cells = solution_cells(reference)
    mistakes = []
    for entry in data.get("mistakes", []):
        patch = tuple((p["replace"], p["with"]) for p in entry["patch"])
        parts = set()
        for old, _ in patch:
            where = [i for i in cells if old in reference.cells[i].source]
            count = sum(reference.cells[i].source.count(old) for i in where)
            if count != 1:
                raise ValueError(f"{path}: mistake {entry['id']!r}: {old!r} occurs {count} times in the "
                                 "solution cells, not once")
            parts.add(cells[where[0]])
        mistakes.append(Mistake(entry["id"], entry["exercise"], " ".join(entry["hint"].split()), patch,
                                ", ".join(sorted(parts))))
    ids = [m.id for m in mistakes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: mistake ids repeat")
    uses = {gid: tuple(parts) for gid, parts in (data.get("uses") or {}).items()}
    return Catalogue(tuple(mistakes), uses)


def patched(reference: nbformat.NotebookNode, mistakes: Sequence[Mistake]) -> dict[int, str]:
    """cell index -> source of each solution cell the ``mistakes`` change, with them made."""
    sources: dict[int, str] = {}
    for mistake in mistakes:
        for old, new in mistake.patch:
            for i in solution_cells(reference):
                source = sources.get(i, reference.cells[i].source)
                if old in source:
                    sources[i] = source.replace(old, new, 1)
                    break
            else:
                raise ValueError(f"mistake {mistake.id!r}: {old!r} is no longer in the reference")
    return sources


def named(mistakes: Sequence[Mistake], grade_id: str) -> str:
    """What the student reads when their results are those of ``mistakes`` made together."""
    def one(m: Mistake) -> str:
        where = "" if m.exercise == grade_id else f" (in `{m.part}`, which this exercise uses)"
        return f"{m.hint}{where}"

    if len(mistakes) == 1:
        return one(mistakes[0])
    return " AND ".join(f"({n}) {one(m)}" for n, m in enumerate(mistakes, 1))


# ----------------------------------------------------------------------------------------
# The public checks' side: each mistake's results on the examples of the public checks
# ----------------------------------------------------------------------------------------

def public_file(module: str) -> Path:
    """Where the public checks of chapter module ``module`` find their mistakes' results."""
    return PUBLIC / f"{module.rsplit('.', 1)[-1]}.pt"


def load_public(module: str) -> dict:
    """``{"mistakes": {id: (hint, exercise, part)}, "examples": {shown: (test cell, [{id: value},
    …])}}`` of a chapter module, one dict per occurrence of ``shown`` (empty when it has none)."""
    path = public_file(module)
    if not path.is_file():
        return {"mistakes": {}, "examples": {}}
    return torch.load(path, map_location="cpu", weights_only=True)


def public_data(catalogue: Catalogue, recorded: dict[str | None, dict[str, dict[str, list]]]) -> dict:
    """What :func:`load_public` reads, from each mistake's recorded examples (``{mistake id or
    None for the reference: {test cell: {shown: [value, …]}}}``): a mistake's value is kept only
    where it differs from the reference's."""
    from .compare import describe_difference

    examples: dict[str, tuple[str, list[dict]]] = {}
    for mistake in catalogue.mistakes:
        for gid, shown_values in recorded[mistake.id].items():
            for shown, values in shown_values.items():
                ref = recorded[None].get(gid, {}).get(shown, [])
                slots = examples.setdefault(shown, (gid, []))[1]
                for n, value in enumerate(values):
                    if n < len(ref) and describe_difference(value, ref[n]) is None:
                        continue
                    while len(slots) <= n:
                        slots.append({})
                    slots[n][mistake.id] = value
    return {"mistakes": {m.id: (m.hint, m.exercise, m.part) for m in catalogue.mistakes},
            "examples": {s: (gid, slots) for s, (gid, slots) in examples.items() if any(slots)}}


def same_raise(a: str, b: str) -> bool:
    """Whether two ``"raised <Type>: <message>"`` texts are the same mistake's exception: the same
    type, and for torch's catch-all RuntimeError also the same message (numbers aside); a
    student's own ValueError may word its message as it likes."""
    kind = Raised(a).kind
    if kind is None or kind != Raised(b).kind:
        return False

    def message(text: str) -> str:  # without the numbers and the grader's "(at: <line>)"
        return re.sub(r"\d+", "#", re.sub(r" \(at: .*\)$", "", text, flags=re.DOTALL))

    return kind != "RuntimeError" or message(a) == message(b)


RECORDING: dict[str, list] | None = None  # shown -> results, while `autograder catalogue` records


def _plain(x: Any) -> Any:
    """``x`` as data a result file can hold (tensors detached on the CPU), else None."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x if isinstance(x, (int, float, str, bool, bytes, type(None))) else None


def record(shown: str, got: Any) -> None:
    """A public check's result on its example ``shown``, kept while recording (:data:`RECORDING`)."""
    if RECORDING is not None:
        RECORDING.setdefault(shown, []).append(_plain(got))


def public_hints(caller, shown: str, got: Any) -> list[str]:
    """The hints of the catalogue mistakes whose result on the public example ``shown`` is
    ``got`` (any of the example's occurrences), worded as the grader words them; ``caller`` is
    the public check's frame, whose chapter module names the catalogue."""
    from .compare import describe_difference

    module = caller.f_globals.get("__name__", "")
    data = _PUBLIC.get(module)
    if data is None:
        data = _PUBLIC[module] = load_public(module)
    grade_id, slots = data["examples"].get(shown, ("", []))

    def same(value: Any, loosely: bool) -> bool:
        if loosely:  # an exception of the same kind (its message may differ between torch versions)
            return isinstance(got, str) and isinstance(value, str) and same_raise(got, value)
        try:
            return describe_difference(got, value) is None
        except Exception:
            return False

    found: list[str] = []
    for loosely in (False, True):
        found = list(dict.fromkeys(i for slot in slots for i, value in slot.items() if same(value, loosely)))
        if found:
            break
    table = data["mistakes"]
    texts = [named([Mistake(i, table[i][1], table[i][0], (), table[i][2])], grade_id) for i in found]
    return texts if len(texts) < 2 else [f"{ALTERNATIVES} " + " OR ".join(f"({n}) {t}" for n, t in enumerate(texts, 1))]


ALTERNATIVES = "each of these mistakes gives exactly your result on this example (the hidden checks tell them apart):"


_PUBLIC: dict[str, dict] = {}
