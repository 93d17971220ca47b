"""Undo what students' editors do to a notebook before nbgrader reads it.

JupyterLab copies a cell's nbgrader metadata when a cell is copy-pasted; other editors drop
all cell metadata; students delete cells, turn them into markdown, switch kernels. nbgrader
then fails on the whole notebook (``SchemaTooOldError``, a bare ``NbGraderException``) or
finds nothing to grade. :func:`repair` compares the submission with the released student
version and puts the grading metadata back where it can tell without guessing, so every
exercise that can be graded is graded; each change is listed in words an instructor can act on.
"""

from __future__ import annotations

import copy
import re

import nbformat

Note = tuple[str | None, str]  # (grade_id the note is about, or None for the whole notebook; text)


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _gid(cell) -> str | None:
    return _meta(cell).get("grade_id")


def _names(source: str) -> set[str]:
    """The functions and classes a cell defines."""
    return set(re.findall(r"^(?:def|class)\s+(\w+)", source, re.MULTILINE))


def _same(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def repair(nb: nbformat.NotebookNode, release: nbformat.NotebookNode) -> list[Note]:
    """Repair ``nb`` in place against the ``release`` version; return what was changed."""
    notes: list[Note] = []
    released = {_gid(c): c for c in release.cells if _gid(c)}
    order = [_gid(c) for c in release.cells if _gid(c)]

    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != release.metadata.get("kernelspec", {}).get("name"):
        notes.append((None, f"the notebook's kernel had been changed to {kernel!r}; graded with the course's Python kernel"))
        nb.metadata["kernelspec"] = copy.deepcopy(release.metadata.get("kernelspec", {}))

    seen: set[str] = set()
    kept = []
    for number, cell in enumerate(nb.cells, start=1):
        gid = _gid(cell)
        if gid is None and "nbgrader" in cell.get("metadata", {}):
            del cell.metadata["nbgrader"]  # grading metadata without an id: nothing to keep
        elif gid is not None and gid not in released:
            del cell.metadata["nbgrader"]
            notes.append((None, f"cell {number} carried grading metadata ({gid!r}) that this assignment "
                                "does not have (copied from another notebook?): it ran as an ordinary cell "
                                "and earns no points of its own"))
        elif gid is not None and gid in seen:
            if _meta(released[gid]).get("solution"):
                del cell.metadata["nbgrader"]  # the student's own copy: run it like any cell
                notes.append((gid, f"cell {number} was a copy of your answer cell {gid!r} (pasted with its "
                                   "grading metadata): both ran, in notebook order"))
            else:
                notes.append((gid, f"cell {number} was a second copy of the locked cell {gid!r} and was "
                                   "left out; the first copy was used"))
                continue
        elif gid is not None:
            seen.add(gid)
            want = released[gid].cell_type
            if cell.cell_type != want:
                notes.append((gid, f"cell {number} ({gid!r}) had been turned into {cell.cell_type}; "
                                   f"it was turned back into {want}"))
                _set_type(cell, want)
        kept.append(cell)
    nb.cells = kept

    missing = [gid for gid in order if gid not in seen]
    if missing:
        recovered = _recover(nb, release, missing)
        if recovered:
            notes.append((None, f"{len(recovered)} cells had lost their grading metadata (saved by another "
                                "editor?); it was restored from the assignment by position and content"))
        for gid in missing:
            if gid in recovered:
                continue
            meta = _meta(released[gid])
            if meta.get("grade"):
                _put_back(nb, release, gid)
                notes.append((gid, f"the test cell {gid!r} was missing (deleted?); it was put back from the assignment"))
            elif meta.get("solution"):
                notes.append((gid, f"the answer cell {gid!r} could not be found: its functions were graded "
                                   "wherever the notebook defines them"))
    return notes


def _put_back(nb, release, gid: str) -> None:
    """Insert the release's cell ``gid`` after the nearest cell before it that ``nb`` still has."""
    order = [_gid(c) for c in release.cells if _gid(c)]
    at = {_gid(c): i for i, c in enumerate(nb.cells) if _gid(c)}
    before = [at[g] for g in order[:order.index(gid)] if g in at]
    cell = copy.deepcopy(next(c for c in release.cells if _gid(c) == gid))
    nb.cells.insert(max(before) + 1 if before else len(nb.cells), cell)


def _set_type(cell, cell_type: str) -> None:
    cell.cell_type = cell_type
    if cell_type == "code":
        cell.setdefault("outputs", [])
        cell.setdefault("execution_count", None)
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)


def _recover(nb, release, missing: list[str]) -> set[str]:
    """Give cells without metadata the release's metadata: locked cells by identical source,
    then each answer cell by its place between them where exactly one code cell fits."""
    released = {_gid(c): c for c in release.cells if _gid(c)}
    found: dict[str, int] = {_gid(c): i for i, c in enumerate(nb.cells) if _gid(c)}
    bare = [i for i, c in enumerate(nb.cells) if not _gid(c)]
    for gid in missing:
        ref = released[gid]
        if _meta(ref).get("solution"):
            continue
        matches = [i for i in bare if i not in found.values() and _same(nb.cells[i].source, ref.source)]
        if len(matches) == 1:
            found[gid] = matches[0]
    order = [_gid(c) for c in release.cells if _gid(c)]
    for gid in missing:
        if not _meta(released[gid]).get("solution") or gid in found:
            continue
        k = order.index(gid)
        before = max((found[g] for g in order[:k] if g in found), default=-1)
        after = min((found[g] for g in order[k + 1:] if g in found), default=len(nb.cells))
        gap = [i for i in range(before + 1, after) if nb.cells[i].cell_type == "code" and i not in found.values()]
        names = _names(released[gid].source)
        fits = [i for i in gap if names and names <= _names(nb.cells[i].source)]
        choice = gap if len(gap) == 1 else fits
        if len(choice) == 1:
            found[gid] = choice[0]
    recovered = set()
    for gid in missing:
        if gid in found:
            cell = nb.cells[found[gid]]
            cell.setdefault("metadata", {})["nbgrader"] = copy.deepcopy(_meta(released[gid]))
            if cell.cell_type != released[gid].cell_type:
                _set_type(cell, released[gid].cell_type)
            recovered.add(gid)
    return recovered
