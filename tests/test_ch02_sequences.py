"""Chapter 2 graded as a class: reference, untouched, and one typical mistake per exercise.

One ``grade_chapter`` call grades every submission; the public checks are tested on the
reference (exec'd here) and on the same mistakes.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder.chapters import ch02_sequences as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "02-sequences"
FULL = 10.0
POINTS = {"test_pad_sequences": 2, "test_window_features": 3, "test_window_tagger": 3,
          "test_masked_mean": 2}

LEFT_PADDED = '''
def pad_sequences(seqs, pad_value=0):
    T = max(len(s) for s in seqs)
    padded = seqs[0].new_full((len(seqs), T, *seqs[0].shape[1:]), pad_value)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool, device=seqs[0].device)
    for b, s in enumerate(seqs):
        padded[b, T - len(s):] = s  # mistake: sequences pushed to the end of the row
        mask[b, T - len(s):] = True
    return padded, mask
'''
WRAPPED = '''
def window_features(x, k):
    # mistake: torch.roll wraps the last positions around to the front instead of zeros
    return torch.cat([x.roll(-j, dims=1) for j in range(-k, k + 1)], dim=-1)
'''
NO_TANH = '''
def window_tagger(ids, E, W1, b1, W2, b2, k):
    h = window_features(E[ids], k) @ W1 + b1  # mistake: no tanh
    return h @ W2 + b2
'''
MEAN_OVER_PADDING = '''
def masked_mean(x, mask):
    return x.mean(dim=1)  # mistake: padding averaged in
'''
MISTAKES = {  # student -> (function, its code, the test cell it loses, words of its hint)
    "leftpad": ("pad_sequences", LEFT_PADDED, "test_pad_sequences", "pad at the END"),
    "wrapped": ("window_features", WRAPPED, "test_window_features", "do not wrap around"),
    "notanh": ("window_tagger", NO_TANH, "test_window_tagger", "the hidden layer has no tanh"),
    "meanpad": ("masked_mean", MEAN_OVER_PADDING, "test_masked_mean", "padding included"),
}


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, MISTAKES, tmp_path_factory.mktemp("downloads"))


def test_reference_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]


def test_untouched_exercise_scores_zero_and_says_what_to_write(graded):
    row = graded["untouched"]
    assert row["score"] == 0
    assert set(row["report"]) == set(POINTS)
    for report in row["report"].values():
        assert "not written yet" in report and "NotImplementedError" in report, report


@pytest.mark.parametrize("student", MISTAKES)
def test_each_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    assert 0 < row["score"] < FULL
    report = row["report"][cell]
    assert f"{POINTS[cell]} of {POINTS[cell]} points" not in report, report
    assert words in report, report
    for other, text in row["report"].items():  # the mistake costs only its own exercise
        if other != cell and other != "test_window_tagger":  # the tagger calls window_features
            assert f"{POINTS[other]} of {POINTS[other]} points" in text, text


# ----------------------------------------------------------------------------------------
# Public checks, on the reference and on the same mistakes
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def test_reference_passes_every_public_check(reference, capsys):
    checks.check_pad_sequences(reference["pad_sequences"])
    checks.check_window_features(reference["window_features"])
    checks.check_window_tagger(reference["window_tagger"])
    checks.check_masked_mean(reference["masked_mean"])
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_catches_the_mistake_with_its_hint(reference, student):
    name, source, _, words = MISTAKES[student]
    namespace = dict(reference)
    exec(source, namespace)
    check = getattr(checks, f"check_{name}")
    with pytest.raises(CheckFailed) as failure:
        check(namespace[name])
    assert words in str(failure.value), str(failure.value)


@pytest.mark.parametrize("mistake, check, words", [
    ("def pad_sequences(seqs, pad_value=0):\n"
     "    p, m = REF(seqs, pad_value)\n    return p, ~m", "pad_sequences", "mask is inverted"),
    ("def pad_sequences(seqs, pad_value=0):\n"
     "    p, m = REF(seqs, pad_value)\n    return p, m.long()", "pad_sequences", "torch.bool"),
    ("def window_features(x, k):\n    y = REF(x, k)\n"
     "    return y.reshape(*y.shape[:2], 2 * k + 1, -1).flip(2).flatten(2)",
     "window_features", "reverse order"),
    ("def pad_sequences(seqs, pad_value=0):\n"  # torch.full takes its dtype from pad_value
     "    T = max(len(s) for s in seqs)\n"
     "    padded = torch.full((len(seqs), T, *seqs[0].shape[1:]), pad_value)\n"
     "    mask = torch.zeros(len(seqs), T, dtype=torch.bool)\n"
     "    for b, s in enumerate(seqs):\n"
     "        padded[b, :len(s)], mask[b, :len(s)] = s, True\n"
     "    return padded, mask", "pad_sequences", "dtype=seqs[0].dtype"),
    ("def window_tagger(ids, E, W1, b1, W2, b2, k):\n"
     "    return torch.tanh(REF(ids, E, W1, b1, W2, b2, k))", "window_tagger",
     "tanh belongs to the hidden layer only"),
    ("def window_features(x, k):\n    y = REF(x, k)\n"
     "    return y.reshape(*y.shape[:2], 2 * k + 1, -1).transpose(2, 3).flatten(2)",
     "window_features", "interleaved"),
    ("def masked_mean(x, mask):\n    m = mask.unsqueeze(-1).to(x.dtype)\n"
     "    return (x * m).sum(1) / x.shape[1]", "masked_mean", "divided by T"),
    ("def masked_mean(x, mask):\n    m = mask.unsqueeze(-1).to(x.dtype)\n"
     "    return (x * m).sum(1) / m.sum(1)", "masked_mean", "clamp_min(1)"),
])
def test_other_mistakes_get_their_own_hint(reference, mistake, check, words):
    namespace = {"torch": torch, "REF": reference[check]}
    exec(mistake, namespace)
    with pytest.raises(CheckFailed) as failure:
        getattr(checks, f"check_{check}")(namespace[check])
    assert words in str(failure.value), str(failure.value)


def test_untouched_exercise_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / "sequences.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == len(POINTS)
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue
