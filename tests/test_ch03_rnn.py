"""Chapter 3 (recurrent networks): one class graded through the README's commands, and the public checks.

The class: the reference, the untouched exercise, and one typical mistake per exercise. Each
mistake must lose some points but not all of that exercise's, and its report must carry the
mistake's own hint; the same mistakes make the public checks fail with that hint.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from autograder import mistakes
from autograder.chapters import ch03_rnn as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "03-rnn"
FULL = 10.0

NO_TANH = '''
def rnn_cell(x_t, h_prev, W_xh, W_hh, b):
    return x_t @ W_xh.T + h_prev @ W_hh.T + b
'''
THROUGH_PADDING = '''
def rnn_forward(x, lengths, W_xh, W_hh, b, h0=None):
    h = x.new_zeros(x.shape[0], W_hh.shape[0]) if h0 is None else h0
    states = []
    for t in range(x.shape[1]):
        h = rnn_cell(x[:, t], h, W_xh, W_hh, b)  # mistake: runs on through the padding
        states.append(h)
    return torch.stack(states, dim=1), h
'''
LSTM_IFOG = '''
def lstm_cell(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    gates = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh
    i, f, o, g = gates.chunk(4, dim=-1)  # mistake: the order of many papers, not PyTorch's
    c_t = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_t), c_t
'''
GRU_Z_SWAPPED = '''
def gru_cell(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    x_r, x_z, x_n = (x_t @ W_ih.T + b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = (h_prev @ W_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return z * n + (1 - z) * h_prev  # mistake: z and 1 - z swapped
'''
LOSS_OVER_PADDING = '''
def sequence_loss(logits, targets, lengths):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # mistake: padding counted
'''
TEMPERATURE_MULTIPLIED = '''
def sample_next(logits, temperature, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits * temperature, dim=-1)  # mistake: multiplied
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
'''
MISTAKES = {  # student -> (function, code, graded cell, words of its hint)
    "notanh": ("rnn_cell", NO_TANH, "test_rnn_cell", "apply torch.tanh"),
    "padding": ("rnn_forward", THROUGH_PADDING, "test_rnn_forward", "inside the padding"),
    "ifog": ("lstm_cell", LSTM_IFOG, "test_lstm_cell", "i, f, o, g (the order of many papers)"),
    "zswap": ("gru_cell", GRU_Z_SWAPPED, "test_gru_cell", "z and 1 - z are swapped"),
    "padloss": ("sequence_loss", LOSS_OVER_PADDING, "test_sequence_loss", "padding included"),
    "hot": ("sample_next", TEMPERATURE_MULTIPLIED, "test_sample_next", "softmax(logits * temperature)"),
}
# Mistakes that still pass the cases they cannot show (T = 1, no padding, temperature 1 or 0);
# a cell with a wrong formula fails every case of its exercise.
KEEP_SOME = {"padding", "padloss", "hot"}
POINTS = {"test_rnn_cell": 1, "test_rnn_forward": 2, "test_lstm_cell": 2, "test_gru_cell": 2,
          "test_sequence_loss": 1, "test_sample_next": 2}


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, MISTAKES, tmp_path_factory.mktemp("downloads-03"))


def test_points_sum_to_ten_and_match_the_cases():
    assert sum(POINTS.values()) == FULL and set(POINTS) == set(checks.CASES)


def test_reference_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]


def test_untouched_exercise_scores_zero_and_says_what_to_write(graded):
    row = graded["untouched"]
    assert row["score"] == 0 and set(row["report"]) == set(POINTS)
    for report in row["report"].values():
        assert "not written yet" in report and "NotImplementedError" in report, report


def _cell_score(report: str) -> float:
    """The points of a cell report's first line, '...: 3/5 hidden checks passed, 1.2 of 2 points'."""
    return float(report.splitlines()[0].rsplit(", ", 1)[1].split(" of ")[0])


@pytest.mark.parametrize("student", MISTAKES)
def test_a_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    assert 0 < row["score"] < FULL, row["report"]
    assert words in row["report"][cell], row["report"][cell]
    scores = {gid: _cell_score(report) for gid, report in row["report"].items()}
    assert scores[cell] < POINTS[cell]
    if student in KEEP_SOME:
        assert scores[cell] > 0, row["report"][cell]
    uses = {cell, "test_rnn_forward"} if cell == "test_rnn_cell" else {cell}  # rnn_forward calls rnn_cell
    assert all(scores[gid] == POINTS[gid] for gid in POINTS if gid not in uses), row["report"]


@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def test_reference_passes_every_public_check(reference, capsys):
    for name in ("rnn_cell", "rnn_forward", "lstm_cell", "gru_cell", "sequence_loss", "sample_next"):
        getattr(checks, f"check_{name}")(reference[name])
    assert capsys.readouterr().out.count("✓") == 6


@pytest.mark.parametrize("student", MISTAKES)
def test_the_public_check_names_the_mistake(reference, student):
    name, code, _, words = MISTAKES[student]
    namespace = dict(reference)
    exec(code, namespace)
    with pytest.raises(CheckFailed) as failure:
        getattr(checks, f"check_{name}")(namespace[name])
    assert words in str(failure.value), str(failure.value)


MORE_MISTAKES = [  # (function, code, words of the hint its public check must give)
    ("rnn_forward", THROUGH_PADDING.replace(
        "h = rnn_cell(x[:, t], h, W_xh, W_hh, b)  # mistake: runs on through the padding",
        "h = torch.where((t < lengths)[:, None], rnn_cell(x[:, t], h, W_xh, W_hh, b), h)"),
     "must be zeros"),
    ("lstm_cell", LSTM_IFOG.replace("i, f, o, g =", "i, f, g, o =").replace(
        "return torch.sigmoid(o) * torch.tanh(c_t), c_t", "return c_t, torch.sigmoid(o) * torch.tanh(c_t)"),
     "return (h_t, c_t) in that order"),
    ("gru_cell", GRU_Z_SWAPPED.replace("return z * n + (1 - z) * h_prev", "return (1 - z) * n + z * h_prev")
     .replace("n = torch.tanh(x_n + r * h_n)",
              "H = h_prev.shape[1]; n = torch.tanh(x_n + r * (h_prev @ W_hh[2 * H:].T) + b_hh[2 * H:])"),
     "with its bias"),
    ("sequence_loss", LOSS_OVER_PADDING.replace(
        "F.cross_entropy(logits.flatten(0, 1), targets.flatten())",
        "F.cross_entropy(logits[torch.arange(logits.shape[1]) < lengths[:, None]], "
        "targets[torch.arange(logits.shape[1]) < lengths[:, None]], reduction='sum')"),
     "sum over the real positions"),
]
GRU_RESET_BEFORE_MATRIX = GRU_Z_SWAPPED.replace(  # the original paper's candidate
    "return z * n + (1 - z) * h_prev", "return (1 - z) * n + z * h_prev").replace(
    "n = torch.tanh(x_n + r * h_n)",
    "H = h_prev.shape[1]; n = torch.tanh(x_n + (r * h_prev) @ W_hh[2 * H:].T + b_hh[2 * H:])")
LOSS_MASKED_MEAN = '''
def sequence_loss(logits, targets, lengths):
    real = torch.arange(logits.shape[1], device=logits.device) < lengths.to(logits.device)[:, None]
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    return (nll * real).mean()  # mistake: divides by B * T
'''
LOSS_PER_SEQUENCE = LOSS_MASKED_MEAN.replace(
    "return (nll * real).mean()  # mistake: divides by B * T",
    "return ((nll * real).sum(1) / real.sum(1)).mean()  # mistake: mean of sequence means")
MORE_MISTAKES += [
    ("gru_cell", GRU_RESET_BEFORE_MATRIX, "original paper's GRU"),
    ("sequence_loss", LOSS_MASKED_MEAN, "counted in the division"),
    ("sequence_loss", LOSS_PER_SEQUENCE, "mean over sequences of each sequence's mean"),
    ("rnn_cell", NO_TANH.replace("return x_t @ W_xh.T + h_prev @ W_hh.T + b",
                                 "return torch.tanh(x_t @ W_xh.T + h_prev @ W_hh.T)"), "bias b is missing"),
    ("lstm_cell", LSTM_IFOG.replace("i, f, o, g =", "i, f, g, o =").replace(
        "torch.sigmoid(o) * torch.tanh(c_t), c_t", "torch.sigmoid(o) * c_t, c_t"), "h_t = o_t * tanh(c_t)"),
    ("gru_cell", GRU_Z_SWAPPED.replace("return z * n + (1 - z) * h_prev", "return (1 - z) * n + z * h_prev")
     .replace("n = torch.tanh(x_n + r * h_n)", "n = torch.tanh(x_n + h_n)"), "reset gate r is not used"),
]


@pytest.mark.parametrize("name, code, words", MORE_MISTAKES)
def test_other_mistakes_get_their_own_hint(reference, name, code, words):
    namespace = dict(reference)
    exec(code, namespace)
    with pytest.raises(CheckFailed) as failure:
        getattr(checks, f"check_{name}")(namespace[name])
    assert words in str(failure.value), str(failure.value)


@pytest.mark.parametrize("name, code, words", MORE_MISTAKES[-6:])
def test_hidden_cases_give_the_same_hint(reference, name, code, words):
    """As the grader judges them (in process): on every hidden case of the cell the code's result
    is that of the catalogue mistake whose hint has the words, so the diagnosis names it, and
    some case tells it from the reference."""
    from autograder.grading import _inputs
    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / "rnn.ipynb", as_version=4)
    catalogue = mistakes.load(ROOT / "solutions" / ASSIGNMENT, nb)
    cell = f"test_{name}"
    (mistake,) = [m for m in catalogue.of(cell) if words in m.hint]
    student, made = dict(reference), dict(reference)
    exec(code, student)
    for source in mistakes.patched(nb, [mistake]).values():
        exec(source, made)
    shown = False
    for (gid, i), args in _inputs({cell: checks.CASES[cell]}, 0).items():
        case = checks.CASES[gid][i]
        got = eval(case.call, student)(*args)
        assert case.difference(got, eval(case.call, made)(*args), args) is None, (mistake.id, case.label)
        shown = shown or case.difference(got, eval(case.call, reference)(*args), args) is not None
    assert shown, f"{mistake.id} passes every hidden case of {cell}"


def test_frequency_check_tells_temperatures_apart():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    for t, wrong in ((0.5, 1.0), (0.5, 2.0), (2.0, 0.5)):
        p = torch.softmax(logits[0] / wrong, -1)
        counts = (p * checks.DRAWS).round().long()
        counts[0] += checks.DRAWS - counts.sum()
        assert checks.frequency_check(counts, None, (logits, t, 0)) is not None
    p = torch.softmax(logits[0] / 0.5, -1)
    counts = (p * checks.DRAWS).round().long()
    counts[0] += checks.DRAWS - counts.sum()
    assert checks.frequency_check(counts, None, (logits, 0.5, 0)) is None


def test_untouched_exercise_checks_say_what_to_do():
    """Run the student version as a student would: every check cell fails with a sentence."""
    nb = nbformat.read(ROOT / "exercises" / ASSIGNMENT / "rnn.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises" / ASSIGNMENT)}}).execute()
    test_cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(test_cells) == len(POINTS)
    for cell in test_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and errors[0].ename == "CheckFailed", cell.source
        assert "replace `raise NotImplementedError()` with your code" in errors[0].evalue
