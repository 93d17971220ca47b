"""The checks a student runs in the notebook explain failures in words."""

from __future__ import annotations

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder.chapters import ch01_tokens as checks
from autograder.spec import CheckFailed
from conftest import ASSIGNMENT, NOTEBOOK, ROOT, reference_code


@pytest.fixture(scope="module")
def reference(course) -> dict:
    """The reference functions, exec'd here: these tests are about the checks, not the sandbox."""
    namespace: dict = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn}  # the setup cell
    for source in reference_code(course).values():
        exec(source, namespace)
    return namespace


def test_reference_passes_every_public_check(reference, capsys):
    checks.check_build_vocab(reference["build_vocab"])
    checks.check_encode_decode(reference["encode"], reference["decode"])
    checks.check_one_hot(reference["one_hot"])
    checks.check_embed(reference["embed"])
    checks.check_cosine(reference["cosine_similarity_matrix"])
    checks.check_train_bpe(reference["train_bpe"])
    checks.check_bpe(reference["bpe_encode"], reference["bpe_decode"])
    assert capsys.readouterr().out.count("✓") == 7


@pytest.mark.parametrize("mistake, check, words", [
    (lambda ids, n: torch.nn.functional.one_hot(ids, n), checks.check_one_hot, "dtype expected torch.float32"),
    (lambda ids, n: torch.nn.functional.one_hot((ids + 1) % n, n).float(), checks.check_one_hot, "shift"),
    (lambda E, eps=1e-8: E @ E.T, checks.check_cosine, "Hint:"),
    (lambda tokens, min_freq=1: sorted(set(tokens)), checks.check_build_vocab, "'<pad>'"),
])
def test_a_typical_mistake_gets_a_sentence_and_a_hint(mistake, check, words):
    with pytest.raises(CheckFailed) as failure:
        check(mistake)
    assert words in str(failure.value)


def test_untouched_exercise_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == 7
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue
