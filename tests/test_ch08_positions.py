"""Chapter 8 (positions): one graded class, and the public checks on the reference and on mistakes.

The class: the reference (full marks), the untouched exercise (zero, "not written yet"
everywhere), and one typical mistake per exercise, each losing part of that exercise's points
with its own hint and nothing elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

from autograder import mistakes
from autograder.chapters import ch08_positions as checks
from autograder.spec import CheckFailed
from conftest import ROOT, grade_chapter, reference_namespace

ASSIGNMENT = "08-positions"
FULL = 10.0
POINTS = {"test_sinusoidal_table": 2, "test_learned_positions": 2,
          "test_is_permutation_equivariant": 3, "test_apply_rope": 3}

TABLE_SWAPPED = '''
def sinusoidal_table(T, d, *, dtype=torch.float32, device=None):
    t = torch.arange(T, dtype=torch.float64, device=device)[:, None]
    angles = t / 10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)
    pe = torch.empty(T, d, dtype=torch.float64, device=device)
    pe[:, 0::2] = angles.cos()  # mistake: cos in the even columns
    pe[:, 1::2] = angles.sin()
    return pe.to(dtype)
'''
TABLE_PAIR_INDEX = '''
def sinusoidal_table(T, d, *, dtype=torch.float32, device=None):
    t = torch.arange(T, dtype=torch.float64, device=device)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64, device=device)
    angles = t / 10000.0 ** (i / d)  # mistake: 10000^(i/d) with the pair index, not 2i/d
    pe = torch.empty(T, d, dtype=torch.float64, device=device)
    pe[:, 0::2] = angles.sin()
    pe[:, 1::2] = angles.cos()
    return pe.to(dtype)
'''
LEARNED_BATCH_AXIS = '''
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d):
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, d)

    def forward(self, x):
        if x.shape[1] > self.max_len:
            raise ValueError(f"T={x.shape[1]} > max_len={self.max_len}")
        B = x.shape[0]
        return x + self.pos(torch.arange(B, device=x.device))[:, None, :]  # mistake: batch axis
'''
LEARNED_NO_CHECK = '''
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d):
        super().__init__()
        self.pos = nn.Embedding(max_len, d)

    def forward(self, x):
        return x + self.pos(torch.arange(x.shape[1], device=x.device))  # mistake: no length check
'''
EQUIV_INVARIANCE = '''
def is_permutation_equivariant(layer, x, rtol=1e-4, atol=1e-5):
    T = x.shape[1]
    with torch.no_grad():
        y = layer(x)
        for i in range(T - 1):
            p = torch.arange(T, device=x.device)
            p[i], p[i + 1] = i + 1, i
            if not torch.allclose(layer(x[:, p]), y, rtol=rtol, atol=atol):  # mistake: y, not y[:, p]
                return False
    return True
'''
ROPE_HALF_SPLIT = '''
def apply_rope(x, positions=None, base=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = torch.arange(T, device=x.device)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=work) / d)
    angles = positions.to(work)[:, None] * theta
    x1, x2 = x[..., : d // 2].to(work), x[..., d // 2 :].to(work)  # mistake: Llama's half split
    y = torch.cat((x1 * angles.cos() - x2 * angles.sin(), x1 * angles.sin() + x2 * angles.cos()), -1)
    return y.to(x.dtype)
'''
MISTAKES = {  # student: (name replaced, code, test cell that loses points, words of its hint)
    "table_pair_index": ("sinusoidal_table", TABLE_PAIR_INDEX, "test_sinusoidal_table",
                         "not 10000^(i/d)"),
    "learned_batch_axis": ("LearnedPositionalEmbedding", LEARNED_BATCH_AXIS, "test_learned_positions",
                           "along the batch axis"),
    "learned_no_check": ("LearnedPositionalEmbedding", LEARNED_NO_CHECK, "test_learned_positions",
                         "must raise ValueError"),
    "equiv_invariance": ("is_permutation_equivariant", EQUIV_INVARIANCE,
                         "test_is_permutation_equivariant", "this tests invariance, not equivariance"),
    "rope_half_split": ("apply_rope", ROPE_HALF_SPLIT, "test_apply_rope", "half-split layout"),
}
LEARNED_WHOLE_TABLE = '''
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d):
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, d)

    def forward(self, x):
        if x.shape[1] > self.max_len:
            raise ValueError(f"T = {x.shape[1]} > max_len = {self.max_len}")
        return x + self.pos.weight  # mistake: the whole table, not its first T rows
'''
LEARNED_OFF_BY_ONE = '''
class LearnedPositionalEmbedding(nn.Module):
    def __init__(self, max_len, d):
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, d)

    def forward(self, x):
        if x.shape[1] >= self.max_len:  # mistake: T == max_len is allowed
            raise ValueError("too long")  # (a message of the student's own: matched by the type only)
        return x + self.pos(torch.arange(x.shape[1], device=x.device))
'''
EQUIV_ONE_RANDPERM = '''
def is_permutation_equivariant(layer, x, rtol=1e-4, atol=1e-5):
    p = torch.randperm(x.shape[1], device=x.device)  # mistake: one random permutation
    with torch.no_grad():
        return torch.allclose(layer(x[:, p]), layer(x)[:, p], rtol=rtol, atol=atol)
'''
# Swapped columns lose every table case (no partial credit to show), so only the public check is tested.
PUBLIC_MISTAKES = {**MISTAKES, "table_swapped": ("sinusoidal_table", TABLE_SWAPPED, "test_sinusoidal_table",
                                                 "sin and cos are swapped"),
                   "learned_whole_table": ("LearnedPositionalEmbedding", LEARNED_WHOLE_TABLE,
                                           "test_learned_positions", "you added the whole (max_len, d) table"),
                   "equiv_one_randperm": ("is_permutation_equivariant", EQUIV_ONE_RANDPERM,
                                          "test_is_permutation_equivariant", "a single random permutation proves little"),
                   "learned_off_by_one": ("LearnedPositionalEmbedding", LEARNED_OFF_BY_ONE, "test_learned_positions",
                                          "a sequence of exactly max_len tokens is allowed")}


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory) -> dict[str, dict]:
    return grade_chapter(course, ASSIGNMENT, MISTAKES, tmp_path_factory.mktemp("downloads08"))


def test_reference_scores_full_marks(graded):
    assert graded["correct"]["score"] == FULL, graded["correct"]["report"]


def test_untouched_exercise_scores_zero_and_says_what_to_write(graded):
    row = graded["untouched"]
    assert row["score"] == 0
    assert set(row["report"]) == set(POINTS)
    for report in row["report"].values():
        assert "not written yet" in report and "Traceback" not in report, report


@pytest.mark.parametrize("student", MISTAKES)
def test_typical_mistake_gets_partial_credit_and_its_hint(graded, student):
    _, _, cell, words = MISTAKES[student]
    row = graded[student]
    assert FULL - POINTS[cell] < row["score"] < FULL, row["report"]
    assert words in row["report"][cell], row["report"][cell]
    for other in set(POINTS) - {cell}:
        assert "points" in row["report"][other] and "✗" not in row["report"][other], row["report"][other]


# ----------------------------------------------------------------------------------------
# Public checks, run here on the reference's functions and on the mistakes
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(course) -> dict:
    return reference_namespace(course, ASSIGNMENT)


def test_reference_passes_every_public_check(reference, capsys):
    checks.check_sinusoidal_table(reference["sinusoidal_table"])
    checks.check_learned_positions(reference["LearnedPositionalEmbedding"])
    checks.check_is_permutation_equivariant(reference["is_permutation_equivariant"])
    checks.check_apply_rope(reference["apply_rope"])
    assert capsys.readouterr().out.count("✓") == 4


CHECKS = {"sinusoidal_table": checks.check_sinusoidal_table,
          "LearnedPositionalEmbedding": checks.check_learned_positions,
          "is_permutation_equivariant": checks.check_is_permutation_equivariant,
          "apply_rope": checks.check_apply_rope}


@pytest.mark.parametrize("student", PUBLIC_MISTAKES)
def test_public_check_catches_the_mistake_with_its_hint(reference, student):
    name, source, _, words = PUBLIC_MISTAKES[student]
    namespace = dict(reference)
    exec(source, namespace)
    with pytest.raises(CheckFailed) as failure:
        CHECKS[name](namespace[name])
    assert words in str(failure.value), str(failure.value)


def test_public_checks_say_when_nothing_is_written(reference):
    def stub(*args, **kwargs):
        raise NotImplementedError()
    with pytest.raises(CheckFailed, match="NotImplementedError"):
        checks.check_apply_rope(stub)


def test_learned_module_with_other_parameter_names_is_told_the_names():
    class Named(torch.nn.Module):
        def __init__(self, max_len, d):
            super().__init__()
            self.table = torch.nn.Embedding(max_len, d)
    with pytest.raises(CheckFailed, match=r"self.pos = nn.Embedding\(max_len, d\)"):
        checks.check_learned_positions(Named)


def test_rope_rotated_the_wrong_way_is_recognised(reference):
    rope = reference["apply_rope"]

    def backwards(x, positions=None, base=10000.0):
        positions = torch.arange(x.shape[-2]) if positions is None else positions
        return rope(x, -positions, base)
    with pytest.raises(CheckFailed, match="wrong direction"):
        checks.check_apply_rope(backwards)


def test_every_test_layer_has_the_answer_its_description_claims(reference):
    equivariant = {"identity", "mlp", "attention", "encoder", "mean_mix"}
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1))
    for kind in checks.LAYERS:
        layer = checks.make_layer(kind, 8, seed=3)
        assert reference["is_permutation_equivariant"](layer, x) is (kind in equivariant), kind


def test_a_single_random_permutation_is_caught_by_the_repeated_hidden_case(reference):
    """The student's one torch.randperm fails the repeated case, with exactly the answers of the
    catalogue's mistake equiv-one-randperm (so the grader names it)."""
    from autograder.grading import case_inputs
    gid = "test_is_permutation_equivariant"
    (index,) = [i for i, c in enumerate(checks.CASES[gid]) if c.call == checks.EQUIV_REPEATED_CALL]
    case = checks.CASES[gid][index]
    args = case_inputs(case, 0, gid, index)
    expected = eval(case.call, {**reference, "checks": checks})(*args)
    namespace = {**reference, "checks": checks}
    exec(EQUIV_ONE_RANDPERM, namespace)
    got = eval(case.call, namespace)(*args)
    assert expected == [False] * 8 and case.judge(got, expected, args) is not None, got
    folder = ROOT / "solutions" / ASSIGNMENT
    nb = nbformat.read(folder / "positions.ipynb", as_version=4)
    (mistake,) = mistakes.load(folder, nb).by_id(["equiv-one-randperm"])
    patched = {**reference, "checks": checks}
    (source,) = mistakes.patched(nb, [mistake]).values()
    exec(source, patched)
    assert eval(case.call, patched)(*args) == got
