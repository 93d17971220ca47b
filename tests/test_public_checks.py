"""The checks a student runs in the notebook explain failures in words."""

from __future__ import annotations

from collections import Counter

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


def _bpe_trainer(pick):
    """A train_bpe whose only difference from the rules is how the next pair is chosen."""
    def train_bpe(text, num_merges):
        ids, merges = list(text.encode("utf-8")), []
        for k in range(num_merges):
            pairs = list(zip(ids, ids[1:]))
            if not pairs:
                break
            pair = pick(pairs)
            merges.append(pair)
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return merges
    return train_bpe


def _without_overlap(pairs):
    """Counts pairs skipping the second of two overlapping occurrences (the mistake)."""
    counts, i = Counter(), 0
    while i < len(pairs):
        counts[pairs[i]] += 1
        i += 2 if i + 1 < len(pairs) and pairs[i][1] == pairs[i + 1][0] == pairs[i][0] else 1
    return max(counts, key=counts.get)


def _strict_decode(ids, merges):
    pieces = {i: bytes([i]) for i in range(256)}
    for k, (a, b) in enumerate(merges):
        pieces[256 + k] = pieces[a] + pieces[b]
    return b"".join(pieces[i] for i in ids).decode("utf-8")  # mistake: no errors="replace"


@pytest.mark.parametrize("mistake, check, words", [
    (_bpe_trainer(lambda pairs: min(Counter(pairs).items(), key=lambda pc: (-pc[1], pc[0]))[0]),
     checks.check_train_bpe, "a tie between equally frequent pairs"),
    (_bpe_trainer(_without_overlap), checks.check_train_bpe, "count pairs with overlap"),
    (lambda ids, W: torch.nn.functional.one_hot(ids, W.shape[0]).float() @ W, checks.check_embed,
     "different dtypes"),
    (lambda ids, W: torch.nn.functional.one_hot(ids, W.shape[0]).to(W.dtype) @ W.T, checks.check_embed,
     "a transposed weight"),
    (lambda ids, W: torch.nn.functional.one_hot(ids, W.shape[1]).to(W.dtype) @ W, checks.check_embed,
     "not below num_classes"),
    (lambda ids, n: torch.zeros(*ids.shape, n).scatter_(-1, ids.unsqueeze(-1), 1.0),
     checks.check_one_hot, "ids.device"),
    (lambda ids, n: (ids.unsqueeze(-1) == torch.arange(n)).float(), checks.check_one_hot, "ids.device"),
    (lambda ids, n: torch.eye(n)[ids.cpu()].to(ids.device), checks.check_one_hot, "'meta' device"),
    (lambda E, eps=1e-8: torch.nn.functional.cosine_similarity(
        E.float()[:, None], E.float()[None], dim=-1, eps=eps), checks.check_cosine, "keeps E's dtype"),
])
def test_each_hinted_mistake_is_told_apart_publicly(mistake, check, words):
    """Issue 10's planted mistakes: each gets its own hint from the public checks, not another's."""
    with pytest.raises(CheckFailed) as failure:
        check(mistake)
    assert words in str(failure.value), str(failure.value)


def test_strict_utf8_decode_gets_a_hint_not_a_bare_exception(reference):
    with pytest.raises(CheckFailed) as failure:
        checks.check_bpe(reference["bpe_encode"], _strict_decode)
    assert "UnicodeDecodeError" in str(failure.value) and "errors='replace'" in str(failure.value)


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
