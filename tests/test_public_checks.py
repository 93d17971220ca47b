"""The checks a student runs in the notebook explain failures in words."""

from __future__ import annotations

from collections import Counter

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder import mistakes
from autograder.chapters import ch01_tokens as checks
from autograder.spec import CheckFailed
from conftest import ASSIGNMENT, NOTEBOOK, ROOT, reference_code

_SOLUTIONS = ROOT / "solutions" / ASSIGNMENT
HINT = {m.id: m.hint for m in mistakes.load(_SOLUTIONS, nbformat.read(_SOLUTIONS / NOTEBOOK, as_version=4)).mistakes}


def _flat(text: str) -> str:
    """``text`` with its line breaks and runs of spaces made single spaces (as the hints are)."""
    return " ".join(text.split())


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


def _one_hot_from_one(ids, n):
    """Classes counted from 1, written another way than the catalogue's patch."""
    out = torch.zeros(*ids.shape, n, device=ids.device)
    for c in range(1, n + 1):
        out[..., c - 1] = (ids == c).float()
    return out


@pytest.mark.parametrize("mistake, check, words, hint", [
    (lambda ids, n: torch.nn.functional.one_hot(ids, n), checks.check_one_hot, "dtype expected torch.float32",
     "one-hot-int64"),
    (_one_hot_from_one, checks.check_one_hot, "7 of 12 values differ", "one-hot-from-one"),
    (lambda E, eps=1e-8: E @ E.T, checks.check_cosine, "values differ", "cosine-raw"),
    (lambda tokens, min_freq=1: sorted((t for t, c in Counter(tokens).items() if c >= min_freq),
                                       key=lambda t: (-Counter(tokens)[t], t)),
     checks.check_build_vocab, "expected '<pad>', got 'b'", "vocab-no-specials"),
    (lambda tokens, min_freq=1: sorted(set(tokens)), checks.check_build_vocab, "expected '<pad>', got 'a'",
     None),  # no specials AND alphabetical order: no mistake we know, so no hint at all
])
def test_a_typical_mistake_gets_a_sentence_and_a_hint(mistake, check, words, hint):
    """A student's own code for a catalogue mistake: what differs, and that mistake's hint (and for
    a mistake we do not know, what differs and the example's explanation, no hint)."""
    with pytest.raises(CheckFailed) as failure:
        check(mistake)
    text = str(failure.value)
    assert words in text and "About this example:" in text
    if hint is None:
        assert "Hint:" not in text, text
    else:
        assert f"Hint: {HINT[hint]}" in _flat(text), text


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


def _bytes_decode(ids, merges):
    pieces = {i: bytes([i]) for i in range(256)}
    for k, (a, b) in enumerate(merges):
        pieces[256 + k] = pieces[a] + pieces[b]
    return b"".join(pieces[i] for i in ids)  # mistake: never decoded


def _bytes_encode(text, merges):
    ids = text.encode("utf-8")  # mistake: bytes, a list only once a merge has run
    for k, pair in enumerate(merges):
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
                out.append(256 + k)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


def _reference_bpe(reference, encode=None, decode=None):
    """check_bpe's two arguments: the reference's, with ``encode`` or ``decode`` replaced."""
    return encode or reference["bpe_encode"], decode or reference["bpe_decode"]


@pytest.mark.parametrize("mistake, check, hint, words", [
    (_bpe_trainer(lambda pairs: min(Counter(pairs).items(), key=lambda pc: (-pc[1], pc[0]))[0]),
     checks.check_train_bpe, "bpe-ties-smallest", "train_bpe('dacb dacb', 1)"),
    (_bpe_trainer(lambda pairs: sorted(Counter(pairs).items(), key=lambda pc: pc[1])[-1][0]),
     checks.check_train_bpe, "bpe-ties-last", "train_bpe('dacb dacb', 1)"),
    (_bpe_trainer(_without_overlap), checks.check_train_bpe, "bpe-count-without-overlap", "train_bpe('aaaaabcbcbc', 1)"),
    (lambda ids, W: torch.nn.functional.one_hot(ids, W.shape[0]).float() @ W, checks.check_embed,
     "embed-no-cast", "raised RuntimeError"),
    (lambda ids, W: torch.nn.functional.one_hot(ids, W.shape[0]).to(W.dtype) @ W.T, checks.check_embed,
     "embed-transposed", "raised RuntimeError"),
    (lambda ids, W: W[ids].float(), checks.check_embed, "embed-float32", "dtype expected torch.float64"),
    (lambda ids, W: torch.nn.functional.one_hot(ids, W.shape[1]).to(W.dtype) @ W, checks.check_embed,
     None, "not below num_classes"),  # F.one_hot raises where the reference's one_hot does not: no catalogue mistake
    (lambda ids, n: torch.zeros(*ids.shape, n).scatter_(-1, ids.unsqueeze(-1), 1.0),
     checks.check_one_hot, None, checks.ONE_HOT_DEVICE.text),
    (lambda ids, n: (ids.unsqueeze(-1) == torch.arange(n)).float(), checks.check_one_hot, None,
     checks.ONE_HOT_DEVICE.text),
    (lambda ids, n: torch.eye(n)[ids.cpu()].to(ids.device), checks.check_one_hot, None, "'meta' device"),
    (lambda ids, n: torch.nn.functional.one_hot(ids, max(int(ids.max()) + 1, 1)).float(), checks.check_one_hot,
     "one-hot-classes-from-ids", "shape expected (2, 4)"),
    (lambda E, eps=1e-8: torch.nn.functional.cosine_similarity(
        E.float()[:, None], E.float()[None], dim=-1, eps=eps), checks.check_cosine, "cosine-float32",
     "dtype expected torch.float64"),
    (lambda E, eps=1e-8: (E / (E.norm(dim=1, keepdim=True) + eps)) @ (E / (E.norm(dim=1, keepdim=True) + eps)).T,
     checks.check_cosine, "cosine-eps-added", "eps=0.1"),
])
def test_each_hinted_mistake_is_told_apart_publicly(mistake, check, hint, words):
    """Planted mistakes, each written in a student's own way: the public checks name the catalogue
    mistake whose result it is, and no other (issue 18); the rest keep their own hints."""
    with pytest.raises(CheckFailed) as failure:
        check(mistake)
    text = _flat(str(failure.value))
    assert words in text, str(failure.value)
    named = [i for i, h in HINT.items() if h in text]
    assert named == ([hint] if hint else []), str(failure.value)


@pytest.mark.parametrize("encode, decode, hint", [
    (_bytes_encode, None, HINT["bpe-encode-bytes"]),
    (None, _bytes_decode, HINT["bpe-decode-bytes"]),
    (None, _strict_decode, HINT["bpe-decode-strict"]),
])
def test_bpe_mistakes_get_their_hints(reference, encode, decode, hint):
    with pytest.raises(CheckFailed) as failure:
        checks.check_bpe(*_reference_bpe(reference, encode, decode))
    assert f"Hint: {hint}" in _flat(str(failure.value)), str(failure.value)


def test_strict_utf8_decode_gets_a_hint_not_a_bare_exception(reference):
    with pytest.raises(CheckFailed) as failure:
        checks.check_bpe(reference["bpe_encode"], _strict_decode)
    assert "raised UnicodeDecodeError" in str(failure.value) and "errors='replace'" in str(failure.value)
    assert "Traceback" not in str(failure.value)


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
