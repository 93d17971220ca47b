"""Chapter 4 (encoder–decoder): grading and public checks.

One class graded through the README's commands: the reference (full marks), the untouched exercise
(zero, every report saying what to write), and one typical mistake per exercise (partial credit,
its own hint). Then the public checks, run here on the reference and on the same mistakes. The
hints are the catalogue's (solutions/04-seq2seq/mistakes.yaml): students' code written otherwise
than the catalogue's patches must still be recognised as the same mistake.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient

from autograder import mistakes
from autograder.chapters import ch04_seq2seq as checks
from autograder.grading import Reference, _inputs, diagnose
from autograder.mistakes import Raised
from autograder.sandbox import Limits
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, notebook_of, reference_namespace

ASSIGNMENT = "04-seq2seq"
FULL = 10.0

# Each mistake: the function it replaces, its code, the test cell it must lose points on, and
# words of the hint the report must contain.
MISTAKES = {
    "h_after_padding": ("encode", '''
def encode(model, src, src_len):
    states, h_n = model.encoder(model.src_emb(src))  # mistake: the padding is read too
    return states, h_n[0]
''', "test_encode", "last real character"),
    "logits": ("decoder_step", '''
def decoder_step(model, y_prev, h):
    _, h_new = model.decoder(model.tgt_emb(y_prev)[:, None], h[None])
    return model.out(h_new[0]), h_new[0]  # mistake: logits, not log-probabilities
''', "test_decoder_step", "these are logits"),
    "pad_in_mean": ("teacher_forced_loss", '''
def teacher_forced_loss(model, src, src_len, tgt):
    _, h = encode(model, src, src_len)
    out, _ = model.decoder(model.tgt_emb(tgt[:, :-1]), h[None])
    log_probs = F.log_softmax(model.out(out), -1)
    nll = -log_probs.gather(-1, tgt[:, 1:, None])[..., 0]
    mask = (tgt[:, 1:] != PAD).to(nll.dtype)
    return (nll * mask).sum() / mask.numel()  # mistake: divides by every position, PAD included
''', "test_teacher_forced_loss", "still counted in the number you divide by"),
    "past_eos": ("greedy_decode", '''
def greedy_decode(step, state, max_len, bos=BOS, eos=EOS):
    prev = torch.full((state.shape[0],), bos, device=state.device)
    out = [[] for _ in range(state.shape[0])]
    for _ in range(max_len):  # mistake: never stops at eos
        log_probs, state = step(prev, state)
        prev = log_probs.argmax(-1)
        for row, token in zip(out, prev.tolist()):
            row.append(token)
    return out
''', "test_greedy_decode", "goes on after its eos"),
    "one_hypothesis": ("beam_search", '''
def beam_search(step, state, max_len, beam_size, alpha=0.0, bos=BOS, eos=EOS):
    tokens, log_p, prev = [], 0.0, torch.tensor([bos], device=state.device)
    for _ in range(max_len):  # mistake: keeps only the best hypothesis (greedy)
        log_probs, state = step(prev, state)
        prev = log_probs.argmax(-1)
        tokens.append(int(prev))
        log_p += float(log_probs[0, prev])
        if tokens[-1] == eos:
            break
    return tokens, log_p / ((5 + len(tokens)) / 6) ** alpha
''', "test_beam_search", "keep beam_size hypotheses"),
}

# More mistakes found in a student-eye review, tested without the grading kernel (cheap): the
# public check and the grader's diagnosis on the hidden cases, computed in this process, must name
# each one: (the function replaced, its code, the test cell, words of the hint, the catalogue id).
REVIEWED = {
    "softmax_over_batch": ("decoder_step", '''
def decoder_step(model, y_prev, h):
    o, h_new = model.decoder(model.tgt_emb(y_prev)[:, None], h[None])
    return F.log_softmax(model.out(o[:, 0]), 0), h_new[0]  # mistake: normalised over the batch
''', "test_decoder_step", "wrong dimension", "step-softmax-over-batch"),
    "logits_not_transposed": ("teacher_forced_loss", '''
def teacher_forced_loss(model, src, src_len, tgt):
    _, h = encode(model, src, src_len)
    s, _ = model.decoder(model.tgt_emb(tgt[:, :-1]), h[None])
    return F.cross_entropy(model.out(s), tgt[:, 1:], ignore_index=PAD)  # mistake: (B, T, V)
''', "test_teacher_forced_loss", "classes from dimension 1", "loss-classes-last"),
    "stops_when_any_row_ends": ("greedy_decode", '''
def greedy_decode(step, state, max_len, bos=BOS, eos=EOS):
    prev = torch.full((state.shape[0],), bos, device=state.device)
    out, done = [[] for _ in range(state.shape[0])], [False] * state.shape[0]
    for _ in range(max_len):
        log_probs, state = step(prev, state)
        prev = log_probs.argmax(-1)
        for b, token in enumerate(prev.tolist()):
            if not done[b]:
                out[b].append(token)
                done[b] = token == eos
        if any(done):  # mistake: all rows must have finished
            break
    return out
''', "test_greedy_decode", "all, not any", "greedy-stops-when-any-ends"),
    "state_of_first_row": ("beam_search", '''
def beam_search(step, state, max_len, beam_size, alpha=0.0, bos=BOS, eos=EOS):
    beam, finished = [([], 0.0, state[0])], []
    for _ in range(max_len):
        prev = torch.tensor([t[-1] if t else bos for t, _, _ in beam], device=state.device)
        log_probs, new_state = step(prev, torch.stack([s for _, _, s in beam]))
        extensions = sorted(((score + lp, tokens + [v], i) for i, (tokens, score, _) in enumerate(beam)
                             for v, lp in enumerate(log_probs[i].tolist())), reverse=True)
        beam = []
        for score, tokens, i in extensions[:beam_size]:
            if tokens[-1] == eos:
                finished.append((tokens, score))
            else:
                beam.append((tokens, score, new_state[0]))  # mistake: not the parent's state
        if not beam:
            break
    tokens, score = max(finished + [(t, s) for t, s, _ in beam],
                        key=lambda h: h[1] / ((5 + len(h[0])) / 6) ** alpha)
    return tokens, score / ((5 + len(tokens)) / 6) ** alpha
''', "test_beam_search", "(the best parent)", "beam-state-of-best-row"),
}
REVIEWED["length_without_eos"] = ("beam_search", REVIEWED["state_of_first_row"][1].replace(
    "new_state[0]))  # mistake: not the parent's state", "new_state[i]))").replace(
    "(5 + len(", "(4 + len("),  # mistake: |Y| without eos, in the choice and in the score
    "test_beam_search", "without eos", "beam-length-without-eos")


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, MISTAKES, tmp_path_factory.mktemp("downloads"))


def test_reference_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]


def test_untouched_exercise_scores_zero_and_says_what_to_write(graded):
    row = graded["untouched"]
    assert row["score"] == 0
    assert set(row["report"]) == set(checks.CASES)
    for report in row["report"].values():
        assert "not written yet" in report and "Traceback" not in report


@pytest.mark.parametrize("student", MISTAKES)
def test_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    assert 0 < row["score"] < FULL, row["report"]
    assert f"{cell}:" in row["report"][cell] and "of" in row["report"][cell]
    assert words in row["report"][cell], row["report"][cell]
    lost = [gid for gid, text in row["report"].items() if "✗" in text]
    assert cell in lost


@pytest.fixture(scope="module")
def reference(course: Path) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def _run_check(name: str, namespace: dict) -> None:
    check = getattr(checks, f"check_{name}")
    if name in ("encode", "decoder_step", "teacher_forced_loss"):
        check(namespace[name], namespace["Seq2Seq"])
    else:
        check(namespace[name])


def test_reference_passes_every_public_check(reference, capsys):
    for name in ("encode", "decoder_step", "teacher_forced_loss", "greedy_decode", "beam_search"):
        _run_check(name, reference)
    assert capsys.readouterr().out.count("✓") == 5


@pytest.mark.parametrize("student", MISTAKES)
def test_public_check_catches_the_mistake_with_its_hint(reference, student):
    name, code, _, words = MISTAKES[student]
    namespace = dict(reference)
    exec(code, namespace)
    with pytest.raises(CheckFailed) as failure:
        _run_check(name, namespace)
    assert words in str(failure.value), str(failure.value)


def test_the_hand_made_trap_separates_greedy_from_the_best_sequence():
    """The public beam-search example is what it claims: greedy's sequence is not the best one."""
    table = checks._tables(checks.GREEDY_TRAP)[0]
    step = checks._markov_step(checks._tables(checks.GREEDY_TRAP))
    log_probs, _ = step(torch.tensor([checks.BOS]), torch.zeros(1, 1))
    assert int(log_probs.argmax()) == checks.A  # greedy's first choice
    greedy = table[checks.BOS, checks.A] + table[checks.A].max()
    best = table[checks.BOS, checks.B_] + table[checks.B_, checks.EOS]
    assert best > greedy


def test_untouched_exercise_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / "seq2seq.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == len(checks.CASES)
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue


@pytest.mark.parametrize("student", REVIEWED)
def test_reviewed_mistake_public_check_names_it(reference, student):
    name, _, _, words, _ = REVIEWED[student]
    namespace = dict(reference)
    exec(REVIEWED[student][1], namespace)
    with pytest.raises(CheckFailed) as failure:
        _run_check(name, namespace)
    assert words in str(failure.value), str(failure.value)


def _outcomes(namespace: dict, cells, seed: int = 0) -> dict:
    """Each hidden case's result of the code in ``namespace`` (an exception as the grader records it)."""
    results = {}
    for (gid, i), args in _inputs({gid: checks.CASES[gid] for gid in cells}, seed).items():
        try:
            results[gid, i] = eval(checks.CASES[gid][i].call, namespace)(*args)
        except Exception as error:
            results[gid, i] = Raised(f"raised {type(error).__name__}: {error}")
    return results


@pytest.fixture(scope="module")
def catalogue_reference(course: Path, reference) -> Reference:
    """The grader's reference for seed 0, computed in this process: the reference's results and
    each catalogue mistake's, on the hidden cases of the reviewed students' cells."""
    folder = course / "solutions" / ASSIGNMENT
    nb = nbformat.read(folder / notebook_of(ASSIGNMENT), as_version=4)
    catalogue = mistakes.load(folder, nb)
    cells = {cell for _, _, cell, _, _ in REVIEWED.values()}
    outcomes = {}
    for mistake in catalogue.mistakes:
        scope = cells & set(catalogue.scope(mistake))
        if scope:  # a fresh namespace: the other functions must call the patched one
            sources = mistakes.patched(nb, [mistake])
            namespace: dict = {}
            for index, cell in enumerate(nb.cells):
                meta = cell.get("metadata", {}).get("nbgrader", {})
                if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade_id") == "setup"):
                    exec(TransformerManager().transform_cell(sources.get(index, cell.source)), namespace)
            outcomes[mistake.id,] = _outcomes(namespace, scope)
    return Reference(_outcomes(reference, cells), nb, "cpu", 0, Limits(), (), catalogue, outcomes,
                     paired=set(checks.CASES))  # single mistakes only: no kernel for pairs


@pytest.mark.parametrize("student", REVIEWED)
def test_reviewed_mistake_hidden_cases_name_it(reference, catalogue_reference, student):
    """The grader's diagnosis of the hidden cases (computed here, in process) is the catalogue
    mistake, whose hint says what the reviewer found."""
    _, code, cell, words, mistake_id = REVIEWED[student]
    namespace = dict(reference)
    exec(code, namespace)
    found = diagnose(checks, catalogue_reference, cell, _outcomes(namespace, [cell]))
    assert found == [(mistake_id,)], found
    assert words in catalogue_reference.catalogue.by_id([mistake_id])[0].hint
