"""Mutation score of the hidden cases: can they see small mistakes in each exercise?

Why: a hidden case set is only as good as the mistakes it catches. A mistake that passes every
hidden case of its own exercise (because the random draw made ``h = 1`` or ``T = 1``, or the
inputs never reach a branch) gets full marks. This script plants such mistakes automatically
and counts how many the cases catch (issue 18, section 2).

How: for each exercise (the code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` in one
solution cell of ``solutions/NN-name/*.ipynb``) it makes *mutants* of that code with :mod:`ast`,
one small change each, in the lines of the solution region only:

* ``op``        arithmetic operator swapped (+ ↔ -, * ↔ /, // → /, @ → *, ** → *, % → //),
                also in ``x += …``; a unary ``-x``, ``~m`` or ``not c`` dropped;
* ``cmp``       comparison swapped (< ↔ <=, > ↔ >=, == ↔ !=, is ↔ is not, in ↔ not in), and ↔ or;
* ``const``     a number off by one (c → c + 1, c - 1), a bool flipped (not in dim positions);
* ``dim``       a dimension changed: ``dim=``/``axis=`` keywords, dim positional arguments of
                torch methods and functions (``sum(-1)``, ``unsqueeze(0)``, ``transpose(-2, -1)``,
                ``torch.cat(xs, 1)``…) and ``x.shape[i]``: -1 ↔ -2, 0 ↔ 1, else one step to 0;
* ``transpose`` a ``transpose``/``permute``/``.T``/``.mT`` dropped;
* ``swap``      two neighbouring positional arguments of a call swapped (not of ``transpose``,
                ``max``… where the order does not matter), or the operands of -, /, //, %, **, @;
* ``call``      a call dropped: ``f(x)`` → ``x`` where it has one argument (``torch.exp(y)``,
                ``self.W_q(x)``), ``obj.method(…)`` → ``obj`` (``.tril()``, ``.clamp_min(eps)``);
* ``stmt``      a statement dropped (replaced by ``pass``): a re-assignment of a bound name,
                an augmented assignment, an assignment into an item or attribute, an
                expression call (``out.append(…)``), an ``if`` block, ``break``/``continue``.

Mutants that do not compile, or that equal the reference or an earlier mutant, are left out.
Each mutant is graded exactly as ``autograde`` grades a student: the exercise notebook filled
with the reference code (``make_submission`` of tests/conftest.py), the exercise's cell replaced
by the mutant, run by :func:`autograder.grading.grade` in its own sandboxed kernel against the
reference results computed once per chapter and seed by :func:`autograder.grading.reference_results`,
with ``SandboxGrade``'s limits and time budget. To execute only what the mutant needs, the
notebook is cut after the exercise's own test cells and only those cells' cases are run (the
case inputs are seeded per case, so they are the ones the full grading draws); an unmutated
notebook cut the same way is graded first and must keep full marks, or the exercise falls back
to the whole notebook.

Which test cells are an exercise's own: the nbgrader test cells that follow its solution cell,
up to the next solution cell (every chapter's notebook is laid out "solution cell, then its
test cell(s)"). As a cross-check, some case of those cells must call a name the solution cell
defines (its ``case.call`` mentions it); otherwise the script warns.

A mutant is *killed* when it loses points in its own test cell(s) (any hidden case of those
cells fails, raises or hangs), and *survives* when it passes them all. Reading the figures:

    exercise     mutants  killed  survived  equiv  error  score

``score`` = killed / (killed + survived), i.e. equivalent mutants and grader errors (the grader
itself raised, e.g. a kernel that would not restart: a verdict of no hidden case) left out. Every survivor is a mistake the hidden cases cannot see:
either add a case (or an input range) that sees it, or, if no input could tell it from the
reference (an equivalent mutant, e.g. ``transpose(-2, -1)`` vs ``transpose(-1, -2)``), mark it by
hand in :data:`EQUIVALENT` below with the reason. Survivors are listed with their line diff and
a stable id: ``operator-crc`` of the changed line's text before and after (it survives edits
elsewhere in the cell and changes when the mutated line itself changes, which is when the mark
must be judged again). A marked mutant that gets killed is reported as a stale mark.

``error`` counts mutants the grader could not grade (:func:`~autograder.grading.grade` raised),
left out of the score and listed with the survivors. Seen: with a spare kernel pre-started
(``prestart``, which ``autograde`` turns on when ``--jobs`` < cores), the spare dies when a hung
call holds it unused for the 30 s call timeout, and the restart raises "Kernel died before
replying to kernel_info"; such a mutant is graded once more without a spare kernel.

    python benchmarks/mutation_score.py [ASSIGNMENT ...] [--limit N] [--seed S] [--jobs J]
                                        [--call-timeout SECONDS] [--list]

``--limit N`` grades at most N mutants per exercise, chosen by their id's hash (the same ones
whatever the seed, so runs with different seeds compare); ``--seed`` is the grading seed (the
hidden inputs); ``--jobs`` grades that many mutants at once; ``--list`` prints the mutants
without grading them. Default: every chapter, seed 0, one job.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import importlib
import multiprocessing
import os
import re
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
# the tests' own notebooks and submissions; the grader's own grading, limits and data files
from conftest import _SOLUTION, assignments, make_submission, notebook_of, reference_code  # noqa: E402

from autograder.grading import cell_points, grade, is_test_cell, reference_results  # noqa: E402
from autograder.nbgrader_plugin import SandboxGrade, data_files  # noqa: E402

# (assignment, exercise, mutant id) -> why no input can tell this mutant from the reference.
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("01-tokens", "train_bpe", "const-392fbde4"):
        "count_pairs counts from 1, not 0: every count + 1, train_bpe only takes the (first) largest",
    ("01-tokens", "train_bpe", "const-eee4b9a6"):
        "count_pairs counts from -1, not 0: every count - 1, train_bpe only takes the (first) largest",
    ("01-tokens", "train_bpe", "const-6b7a3ffb"):
        "count_pairs adds 2, not 1: every count doubled, train_bpe only takes the (first) largest",
    ("01-tokens", "train_bpe", "call-d004bff0"):
        "ids = bytes, not a list: zip and indexing give the same ints, and merge_pair returns a list",
    ("06-self-attention", "softmax", "const-9090eded"):
        "max of an all -inf slice filled with 1.0, not 0.0: exp(-inf - c) = 0 for any finite c",
    ("06-self-attention", "softmax", "const-88dd6a7d"):
        "max of an all -inf slice filled with -1.0, not 0.0: exp(-inf - c) = 0 for any finite c",
    ("06-self-attention", "softmax", "const-1408c383"):
        "a zero sum replaced by 2.0, not 1.0: the sum is 0 only where every e is 0, and 0 / c = 0",
    ("07-multi-head", "multi_head_self_attention", "stmt-60638bab"):
        "allowed left (T, T), not expanded to (B, 1, T, T): the padding &, SDPA's attn_mask and masked_fill broadcast it the same",
    ("07-multi-head", "multi_head_self_attention", "call-6bd1fab1"):
        "allowed left (T, T), not expanded to (B, 1, T, T): the padding &, SDPA's attn_mask and masked_fill broadcast it the same",
    ("07-multi-head", "fix_the_bug", "const-c4658cc9"):
        "nn.MultiheadAttention(bias=True): _reset_parameters sets in_proj_bias and out_proj.bias to 0, the same outputs",
    ("07-multi-head", "fix_the_bug", "const-13aecb29"):
        "need_weights=True: performance only, the same attention output (the weights are discarded)",
    ("07-multi-head", "fix_the_bug", "swap-38376a6e"):
        "(expected - got).abs() vs (got - expected).abs(): IEEE subtraction is antisymmetric, abs drops the sign",
    ("07-multi-head", "fix_the_bug", "op-1a26b47c"):
        "sqrt(d_model / n_head) vs sqrt(d_model // n_head): equal whenever n_head divides d_model, which multi-head attention requires",
    ("07-multi-head", "multi_head_self_attention", "stmt-fc532818"):
        "CPU only: SDPA already returns 0 for a query with no allowed key (CUDA's memory-efficient kernel may give NaN)",
    ("07-multi-head", "multi_head_self_attention", "call-1079a0e0"):
        "CPU only: SDPA already returns 0 for a query with no allowed key (CUDA's memory-efficient kernel may give NaN)",
    ("07-multi-head", "cross_attention", "stmt-319190d4"):
        "CPU only: SDPA already returns 0 for an all-padding source (CUDA's memory-efficient kernel may give NaN)",
    ("07-multi-head", "cross_attention", "call-65084fe6"):
        "CPU only: SDPA already returns 0 for an all-padding source (CUDA's memory-efficient kernel may give NaN)",
    ("08-positions", "apply_rope", "call-80fb04a6"):
        "integer positions times theta promote to theta's dtype (work): the same conversion as .to(work)",
    ("08-positions", "apply_rope", "call-7afa7fd0"):
        "x1 not cast to work: already work for float32/64 x; a bfloat16/float16 x1 times float32 cos/sin is promoted exactly to float32",
    ("08-positions", "apply_rope", "call-75360bbb"):
        "x2 not cast to work: already work for float32/64 x; a bfloat16/float16 x2 times float32 cos/sin is promoted exactly to float32",
    ("09-transformer", "layer_norm", "swap-7e557d3d"):
        "(mean - x) ** 2 vs (x - mean) ** 2: IEEE subtraction is antisymmetric, squaring drops the sign",
    ("09-transformer", "EncoderLayer", "const-27fe341d"):
        "need_weights=True: performance only, the same attention output (the weights are discarded)",
    ("09-transformer", "DecoderLayer", "const-322074b5"):
        "need_weights=True in self-attention: performance only, the same attention output (the weights are discarded)",
    ("09-transformer", "DecoderLayer", "const-322074b5'"):
        "need_weights=True in cross-attention: performance only, the same attention output (the weights are discarded)",
    ("02-sequences", "pad_sequences", "const-b4a62f05"):
        "seqs[-1], not seqs[0]: every sequence shares dtype, device and trailing shape, all that new_full takes from it",
    ("02-sequences", "masked_mean", "call-3d186513"):
        "bool mask not cast to x.dtype: x * bool promotes to x.dtype, and the count divides as the same integer",
    ("03-rnn", "rnn_forward", "dim-d77e8b22"):
        "W_hh.shape[1], not [0]: W_hh is (H, H), square in every valid call",
    ("04-seq2seq", "encode", "const-0cbb7dfa"):
        "h_n[-1], not h_n[0]: the given encoder is a one-layer unidirectional nn.GRU, h_n is (1, B, H)",
    ("04-seq2seq", "greedy_decode", "stmt-bc239e35"):
        "performance only: no early stop once every row is done; done rows append nothing",
    ("04-seq2seq", "greedy_decode", "stmt-7cf52cbf"):
        "performance only: break dropped after all(done); done rows append nothing",
    ("03-rnn", "rnn_forward", "stmt-df35eada"):
        "CPU only: lengths are on x's device when graded on the CPU; on CUDA the lengths.cpu() case raises",
    ("03-rnn", "rnn_forward", "call-a1cec810"):
        "CPU only: lengths are on x's device when graded on the CPU; on CUDA the lengths.cpu() case raises",
    ("03-rnn", "sequence_loss", "call-bf03223c"):
        "CPU only: lengths are on the logits' device when graded on the CPU; on CUDA the lengths.cpu() case raises",
    ("04-seq2seq", "encode", "call-535cb7e4"):
        "CPU only: pack_padded_sequence takes CPU lengths as they are; on CUDA every case raises",
    ("10-gpt", "GPT", "swap-de7c3622"):
        "lm_head made as Linear(V, C), not Linear(C, V): its weight is replaced at once by wte.weight (V, C), bias=False",
    ("10-gpt", "filter_logits", "cmp-297a20f3"):
        "top-k also run when top_k == V: the V-th largest is the row's minimum, and nothing is below it",
    ("10-gpt", "filter_logits", "call-2d4c990e"):
        "scatter into drop_sorted, not into zeros: order is a permutation of each row, so every entry is overwritten",
    ("10-gpt", "causal_self_attention", "call-b33fc981"):
        "CPU only: .contiguous() dropped, but CPU attention returns its output laid out as (B, T, nh, hs); "
        "CUDA's math kernel (float64 case) does not, and .view raises",
    ("11-kv-cache", "generate", "const-82c1d678"):
        "2·n_layer caches, not n_layer: gpt_forward reads caches[i] for i < n_layer only; unused memory",
    ("11-kv-cache", "generate", "call-fd60da6c"):
        "one cache per parameter name (>= n_layer), not per layer: gpt_forward reads caches[i] for i < n_layer only",
    ("11-kv-cache", "generate", "cmp-8fbc30f2"):
        "performance only: one more decode call after the last token; its logits are never sampled and it fits",
    ("11-kv-cache", "generate", "op-7f4136ec"):
        "performance only: the condition is always true, one more decode call whose logits are never sampled",
    ("11-kv-cache", "generate", "const-c1ba8e7a"):
        "performance only: the condition is always true, one more decode call whose logits are never sampled",
    ("11-kv-cache", "complete", "call-3a2d406c"):
        "the unknown characters shown as a set, not a sorted list: only the ValueError's message differs",
    ("11-kv-cache", "complete", "stmt-25533858"):
        "no vocabulary check: vocabulary.index(c) raises ValueError for the first unknown character; only the message differs",
    ("11-kv-cache", "complete", "call-c2b1cdda"):
        "vocabulary indexed with 0-d int64 tensors, not ints: str indexing takes them through __index__",
    ("11-kv-cache", "complete", "const-cf1fdb8b"):
        "ids[-1], not ids[0]: the prompt is (1, T0), a single row",
    ("12-ranking", "ndcg_at_k", "const-efa21d83"):
        "an all-zero ideal DCG replaced by 2.0, not 1.0: the DCG is 0 there too, and 0 / c = 0",
    ("12-ranking", "listwise_loss", "const-541a89e1"):
        "padded log-probabilities filled with 1.0, not 0.0: the target is 0 there, and 0 * 1 = 0",
    ("12-ranking", "listwise_loss", "const-3d9534d6"):
        "padded log-probabilities filled with -1.0, not 0.0: the target is 0 there, and 0 * -1 = 0",
    ("12-ranking", "set_ranker", "const-73756c57"):
        "need_weights=True: performance only, the same attention output (the weights are discarded)",
    ("12-ranking", "induced_set_attention", "const-3348a597"):
        "need_weights=True: performance only, the same attention output (the weights are discarded)",
    ("12-ranking", "induced_set_attention", "const-31862915"):
        "need_weights=True: performance only, the same attention output (the weights are discarded)",
    ("12-ranking", "induced_set_attention", "op-5a876fe1"):
        "another initial scale of the inducing points: every case loads the reference's parameters",
    ("12-ranking", "induced_set_attention", "swap-61c97088"):
        "another initial value of the inducing points: every case loads the reference's parameters",
    ("12-ranking", "induced_set_attention", "call-357cd1d1"):
        "another initial scale of the inducing points: every case loads the reference's parameters",
}

# --------------------------------------------------------------------------- mutants

ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
         ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult}
COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.MatMult)
DIM_KEYWORDS = {"dim", "dim0", "dim1", "axis", "start_dim", "end_dim"}
# method name -> positions of its dim arguments (as x.method(...)); as torch.f(x, ...) one later
DIM_METHODS = {name: (0,) for name in (
    "sum", "mean", "prod", "amax", "amin", "max", "min", "argmax", "argmin", "softmax", "log_softmax",
    "cumsum", "cumprod", "logsumexp", "unsqueeze", "squeeze", "size", "unflatten", "narrow",
    "index_select", "gather", "var", "std", "all", "any", "count_nonzero")}
DIM_METHODS.update({"transpose": (0, 1), "swapaxes": (0, 1), "movedim": (0, 1), "flatten": (0, 1),
                    "split": (1,), "chunk": (1,), "topk": (1,)})
DIM_FUNCTIONS = {"cat": (1,), "stack": (1,), "concat": (1,)}  # torch.cat(tensors, dim)
TRANSPOSES = {"transpose", "swapaxes", "permute", "t", "movedim"}
TRANSPOSE_ATTRIBUTES = {"T", "mT", "H", "mH"}
SYMMETRIC = {"transpose", "swapaxes", "max", "min", "maximum", "minimum", "add", "mul", "eq", "ne",
             "equal", "allclose", "isclose", "logical_and", "logical_or"}
MODULES = {"torch", "F", "nn", "math", "np", "numpy", "random", "functools", "itertools", "collections"}


@dataclass
class Mutant:
    id: str
    operator: str
    code: str  # the whole cell
    diff: list[str]  # "L<n> - old" / "L<n> + new"


@dataclass
class Exercise:
    assignment: str
    name: str  # the solution cell's grade_id
    cell: int  # its index in the notebook
    own: list[str]  # the grade_ids of its test cells
    end: int  # index of the next solution cell (the notebook is cut there)
    code: str
    mutants: list[Mutant] = field(default_factory=list)
    skipped: int = 0  # generated but not compiling (or not representable as text)


def solution_region(source: str) -> tuple[str, set[int]]:
    """(the cell without nbgrader's markers — as ``reference_code`` gives it —, the 1-based line
    numbers of that text which lie inside a solution region)."""
    kept, inside, region = [], False, set()
    for line in source.splitlines(keepends=True):
        marker = _SOLUTION.match(line)
        if marker:
            inside = marker.group(1) == "BEGIN"
            continue
        kept.append(line)
        if inside:
            region.add(len(kept))
    return "".join(kept), region


def _walk(tree: ast.AST) -> list[tuple[ast.AST, ast.AST | None, str | None, int | None]]:
    """Every node with (parent, field, index in the field's list) in a fixed order, so that the
    same walk of a deep copy finds the copy of each node at the same position."""
    out = []

    def visit(node, parent, name, index):
        out.append((node, parent, name, index))
        for child_name, value in ast.iter_fields(node):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        visit(item, node, child_name, i)
            elif isinstance(value, ast.AST):
                visit(value, node, child_name, None)

    visit(tree, None, None, None)
    return out


def _int_value(node: ast.AST) -> int | None:
    """The value of an integer literal (``3``, ``-1``), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int):
        return -node.operand.value
    return None


def _literal(value: int | float) -> ast.expr:
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


def _other_dim(d: int) -> int:
    """-1 ↔ -2, 0 ↔ 1, else one step towards 0."""
    return {-1: -2, -2: -1, 0: 1, 1: 0}.get(d, d + 1 if d < 0 else d - 1)


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def _is_module(node: ast.AST, modules: set[str]) -> bool:
    root = _root(node)
    return isinstance(root, ast.Name) and root.id in modules and root is not node or (
        isinstance(node, ast.Name) and node.id in modules)


def _callee(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def _dim_positions(call: ast.Call, modules: set[str]) -> tuple[int, ...]:
    """Positions of ``call``'s positional arguments that are dimensions."""
    name = _callee(call)
    as_function = isinstance(call.func, ast.Name) or _is_module(call.func.value, modules)
    if as_function:
        if name in DIM_FUNCTIONS:
            return DIM_FUNCTIONS[name]
        return tuple(i + 1 for i in DIM_METHODS.get(name, ()))
    return DIM_METHODS.get(name, ())


def _dim_nodes(tree: ast.AST, modules: set[str]) -> set[int]:
    """ids of the literal nodes that stand for a dimension."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for i in _dim_positions(node, modules):
                if i < len(node.args):
                    found.add(id(node.args[i]))
            found.update(id(k.value) for k in node.keywords if k.arg in DIM_KEYWORDS)
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
              and node.value.attr == "shape"):
            found.add(id(node.slice))
    for node in list(ast.walk(tree)):  # the literal 1 inside -1 stands for it too
        if id(node) in found and isinstance(node, ast.UnaryOp):
            found.add(id(node.operand))
    return found


def _bound_before(function: ast.AST, line: int) -> set[str]:
    """Names a function binds (its parameters, assignments and loop targets) before ``line``."""
    names = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    for node in ast.walk(function):
        if getattr(node, "lineno", line) < line:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, (ast.AugAssign, ast.For, ast.comprehension)) else [])
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _candidates(node: ast.AST, parent: ast.AST | None, dims: set[int], modules: set[str],
                function: ast.AST | None):
    """(operator, how to change a copy of ``node``: a function returning its replacement)."""
    if isinstance(node, ast.BinOp) and type(node.op) in ARITH:
        yield "op", lambda n: ast.BinOp(n.left, ARITH[type(n.op)](), n.right)
    if isinstance(node, ast.AugAssign) and type(node.op) in ARITH:
        yield "op", lambda n: ast.AugAssign(n.target, ARITH[type(n.op)](), n.value)
    if isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.UAdd) and _int_value(node) is None \
            and not isinstance(node.operand, ast.Constant):
        yield "op", lambda n: n.operand
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE:
                yield "cmp", lambda n, i=i: ast.Compare(n.left, [COMPARE[type(o)]() if j == i else o
                                                                 for j, o in enumerate(n.ops)], n.comparators)
    if isinstance(node, ast.BoolOp):
        yield "cmp", lambda n: ast.BoolOp(ast.Or() if isinstance(n.op, ast.And) else ast.And(), n.values)
    if isinstance(node, ast.Constant) and id(node) not in dims and not (
            isinstance(parent, ast.UnaryOp) and id(parent) in dims):
        if type(node.value) is bool:
            yield "const", lambda n: ast.Constant(not n.value)
        elif type(node.value) in (int, float):
            yield "const", lambda n: _literal(n.value + 1)
            yield "const", lambda n: _literal(n.value - 1)
    if id(node) in dims and _int_value(node) is not None and not (
            isinstance(parent, ast.UnaryOp) and id(parent) in dims):
        yield "dim", lambda n: _literal(_other_dim(_int_value(n)))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in TRANSPOSES and not _is_module(node.func.value, modules):
        yield "transpose", lambda n: n.func.value
    if isinstance(node, ast.Attribute) and node.attr in TRANSPOSE_ATTRIBUTES and isinstance(node.ctx, ast.Load):
        yield "transpose", lambda n: n.value
    if isinstance(node, ast.Call) and _callee(node) not in SYMMETRIC \
            and not any(isinstance(a, ast.Starred) for a in node.args):
        for i in range(len(node.args) - 1):
            if ast.dump(node.args[i]) != ast.dump(node.args[i + 1]):
                yield "swap", lambda n, i=i: ast.Call(n.func, n.args[:i] + [n.args[i + 1], n.args[i]] + n.args[i + 2:],
                                                      n.keywords)
    if isinstance(node, ast.BinOp) and isinstance(node.op, NON_COMMUTATIVE):
        yield "swap", lambda n: ast.BinOp(n.right, n.op, n.left)
    if isinstance(node, ast.Call) and _callee(node) != "super":
        method = isinstance(node.func, ast.Attribute)
        receiver = node.func.value if method else None
        if method and not _is_module(node.func, modules) and not (
                isinstance(receiver, ast.Name) and receiver.id == "self") and not (
                isinstance(receiver, ast.Call) and _callee(receiver) == "super"):
            yield "call", lambda n: n.func.value
        elif len(node.args) == 1 and not node.keywords and not isinstance(node.args[0], ast.Starred):
            yield "call", lambda n: n.args[0]
    if isinstance(node, ast.stmt) and _droppable(node, function):
        yield "stmt", lambda n: ast.Pass()


def _droppable(node: ast.stmt, function: ast.AST | None) -> bool:
    if isinstance(node, (ast.AugAssign, ast.If, ast.Break, ast.Continue)):
        return True
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Call)
    if isinstance(node, ast.Assign):
        bound = _bound_before(function, node.lineno) if function is not None else set()
        return all(isinstance(t, (ast.Attribute, ast.Subscript)) or (isinstance(t, ast.Name) and t.id in bound)
                   for t in node.targets)
    return False


def _splice(lines: list[str], node: ast.AST, text: str) -> str:
    """``lines`` (of the cell) with ``node``'s source span replaced by ``text``."""
    start, end = node.lineno - 1, node.end_lineno - 1
    head = lines[start].encode()[:node.col_offset].decode()
    tail = lines[end].encode()[node.end_col_offset:].decode()
    return "".join(lines[:start]) + head + text + tail + "".join(lines[end + 1:])


def _diff(before: str, after: str) -> list[str]:
    a, b = before.splitlines(), after.splitlines()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            out += [f"L{i + 1} - {a[i]}" for i in range(i1, i2)]
            out += [f"L{j1 + k + 1} + {b[j]}" for k, j in enumerate(range(j1, j2))]
    return out


def _modules(nb: nbformat.NotebookNode) -> set[str]:
    """Names the notebook binds to modules (``import torch.nn.functional as F``) and the usual ones."""
    names = set(MODULES)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            found = re.match(r"\s*(?:from\s+\S+\s+)?import\s+(.+)", line)
            if found:
                names.update(part.split(" as ")[-1].strip() for part in found.group(1).split(","))
    return names


def mutants(code: str, region: set[int], modules: set[str]) -> tuple[list[Mutant], int]:
    """The mutants of the solution region of one cell, and how many did not compile."""
    tree = ast.parse(code)
    lines = code.splitlines(keepends=True)
    dims = _dim_nodes(tree, modules)
    entries = _walk(tree)
    functions = {}  # id(node) -> the innermost function around it
    for f in ast.walk(tree):
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(f):
                functions[id(n)] = f  # inner functions come later in the walk and win
    found: dict[str, Mutant] = {}
    seen = {code}
    skipped = 0
    for k, (node, parent, _, _) in enumerate(entries):
        if not hasattr(node, "lineno") or not set(range(node.lineno, node.end_lineno + 1)) <= region:
            continue
        for operator, change in _candidates(node, parent, dims, modules, functions.get(id(node))):
            copied = copy.deepcopy(tree)
            target, owner, name, index = _walk(copied)[k]
            new = change(target)
            if index is None:
                setattr(owner, name, new)
            else:
                getattr(owner, name)[index] = new
            expected = ast.dump(copied)
            text = "pass" if isinstance(new, ast.Pass) else ast.unparse(new)
            for candidate in (text, f"({text})"):  # parentheses where precedence needs them
                mutated = _splice(lines, node, candidate)
                try:
                    compile(mutated, "<mutant>", "exec")
                    ok = ast.dump(ast.parse(mutated)) == expected
                except (SyntaxError, ValueError):
                    ok = False
                if ok or isinstance(new, ast.stmt):
                    break
            if not ok:
                skipped += 1
                continue
            if mutated in seen:
                continue
            seen.add(mutated)
            diff = _diff(code, mutated)
            key = "\n".join(line.split(" ", 2)[1] + line.split(" ", 2)[2].strip() for line in diff)
            mutant_id = f"{operator}-{zlib.crc32(key.encode()):08x}"
            while mutant_id in found:  # the same change of the same text elsewhere in the cell
                mutant_id += "'"
            found[mutant_id] = Mutant(mutant_id, operator, mutated, diff)
    return list(found.values()), skipped


def exercises(assignment: str) -> list[Exercise]:
    """Each solution cell of the reference notebook, its own test cells and its mutants."""
    nb = nbformat.read(ROOT / "solutions" / assignment / notebook_of(assignment), as_version=4)
    tests = importlib.import_module(nb.metadata["autograder"]["tests"])
    modules = _modules(nb)
    stripped = reference_code(ROOT, assignment)
    solution_cells = [i for i, c in enumerate(nb.cells)
                      if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
    found = []
    for n, i in enumerate(solution_cells):
        end = solution_cells[n + 1] if n + 1 < len(solution_cells) else len(nb.cells)
        own = [c.metadata.nbgrader["grade_id"] for c in nb.cells[i + 1:end] if is_test_cell(c)]
        name = nb.cells[i].metadata.nbgrader["grade_id"]
        code, region = solution_region(nb.cells[i].source)
        assert code == stripped[name], f"{assignment} {name}: markers not as conftest strips them"
        defined = {d.name for d in ast.parse(code).body if isinstance(d, (ast.FunctionDef, ast.ClassDef))}
        calls = " ".join(case.call for gid in own for case in tests.CASES.get(gid, []))
        if not any(re.search(rf"\b{re.escape(d)}\b", calls) for d in defined):
            print(f"warning: {assignment} {name}: no case of {own} calls {sorted(defined)}", file=sys.stderr)
        exercise = Exercise(assignment, name, i, own, end, code)
        exercise.mutants, exercise.skipped = mutants(code, region, modules)
        found.append(exercise)
    return found


def chosen(mutants: list[Mutant], limit: int | None) -> list[Mutant]:
    """At most ``limit`` mutants, picked by the hash of their id (independent of the seed)."""
    if limit is None or len(mutants) <= limit:
        return mutants
    picked = set(sorted((zlib.crc32(m.id.encode()), m.id) for m in mutants)[:limit])
    return [m for m in mutants if (zlib.crc32(m.id.encode()), m.id) in picked]


# --------------------------------------------------------------------------- grading

_STATE: dict = {}


def _setup(tests_module: str, expected: dict, settings: dict, parent: int | None = None) -> None:
    """Per grading process: the chapter's cases, reference results and the grader's settings;
    a pool's worker dies with ``parent``."""
    if parent is not None:
        from autograder.zygote import die_with_parent
        die_with_parent(parent)
    _STATE.update(tests=importlib.import_module(tests_module), expected=expected, **settings)


def _grade(notebook: dict, own: list[str]) -> tuple[dict[str, tuple[int, int]] | None, str, float]:
    """Grade one notebook on its exercise's own test cells: ({grade_id: (passed, total)}, the first
    failure's first line, seconds); (None, the error, seconds) when the grader raised."""
    start = time.perf_counter()
    nb = nbformat.from_dict(notebook)
    s = _STATE
    tests = s["tests"]
    only = type(tests)(tests.__name__)  # the same cases, those of the own test cells only
    only.CASES = {gid: cases for gid, cases in tests.CASES.items() if gid in own}
    points = {gid: p for gid, p in cell_points(nb).items() if gid in own}
    for prestart in dict.fromkeys((s["prestart"], False)):  # once more without a spare kernel, see below
        try:
            reports = grade(copy.deepcopy(nb), only, s["expected"], points, device=s["device"], seed=s["seed"],
                            limits=s["limits"], files=s["files"], prestart=prestart, budget=s["budget"])
            break
        except Exception as error:  # the grader itself failed: neither killed nor survived
            failed = f"grader error: {type(error).__name__}: {error}"
    else:
        return None, failed, time.perf_counter() - start
    first = next((str(verdict).splitlines()[0] for r in reports.values() for (verdict, _) in r.failures), "")
    return {gid: (r.passed, r.total) for gid, r in reports.items()}, first, time.perf_counter() - start


def _killed(outcome: dict[str, tuple[int, int]] | None) -> bool:
    return outcome is not None and (any(passed < total for passed, total in outcome.values()) or not outcome)


def _submission(exercise: Exercise, code: str | None, cut: bool) -> dict:
    nb = make_submission(ROOT, assignment=exercise.assignment)
    if code is not None:
        nb.cells[exercise.cell].source = code
    if cut:
        nb.cells = nb.cells[:exercise.end]
    return nb


def run_chapter(assignment: str, args) -> tuple[list[Exercise], dict]:
    """Grade every (chosen) mutant of the chapter: (exercises, {(exercise, mutant id): outcome})."""
    found = exercises(assignment)
    for exercise in found:
        exercise.mutants = chosen(exercise.mutants, args.limit)
    reference = nbformat.read(ROOT / "solutions" / assignment / notebook_of(assignment), as_version=4)
    tests = importlib.import_module(reference.metadata["autograder"]["tests"])
    grader = SandboxGrade()  # the grader's own defaults (nbgrader_config.py sets only the device)
    grader.call_timeout = args.call_timeout or grader.call_timeout
    prestart = args.jobs < (os.cpu_count() or 1)
    start = time.perf_counter()
    expected = reference_results(reference, tests, device=args.device, seed=args.seed, limits=grader.limits(),
                                 files=data_files(ROOT / "solutions" / assignment), prestart=prestart)
    print(f"{assignment}: reference results in {time.perf_counter() - start:.1f} s; "
          f"{sum(len(e.mutants) for e in found)} mutants to grade", flush=True)
    settings = dict(device=args.device, seed=args.seed, limits=grader.limits(), budget=grader.budget,
                    files=data_files(ROOT / "exercises" / assignment), prestart=prestart)

    def graded(jobs: list[tuple[tuple, dict, list[str]]]) -> dict:
        def shown(key, result):
            if args.verbose:
                outcome, first, took = result
                verdict = "error" if outcome is None else "killed" if _killed(outcome) else "survived"
                print(f"  {key[0]} {key[1]}: {verdict} in {took:.1f} s  {first[:100]}", flush=True)
            return result

        if args.jobs == 1:
            _setup(tests.__name__, expected, settings)
            return {key: shown(key, _grade(nb, own)) for key, nb, own in jobs}
        context = multiprocessing.get_context("spawn")  # no fork of a process that has run torch
        with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_setup,
                                 initargs=(tests.__name__, expected, settings, os.getpid())) as pool:
            futures = {key: pool.submit(_grade, nb, own) for key, nb, own in jobs}
            return {key: shown(key, future.result()) for key, future in futures.items()}

    # the unmutated notebook, cut after each exercise, must keep full marks on its own cells
    cut = {}
    baseline = graded([((e.name, "cut"), _submission(e, None, True), e.own) for e in found])
    for e in found:
        outcome = baseline[e.name, "cut"][0]
        cut[e.name] = outcome is not None and not _killed(outcome)
        if not cut[e.name]:
            print(f"note: {assignment} {e.name} loses points when the notebook is cut after it "
                  f"({baseline[e.name, 'cut'][1]}): grading its mutants on the whole notebook", flush=True)
    full = graded([((e.name, "whole"), _submission(e, None, False), e.own) for e in found if not cut[e.name]])
    for (name, _), (outcome, first, _) in full.items():
        if outcome is None or _killed(outcome):
            raise SystemExit(f"{assignment} {name}: the reference itself loses points ({first})")
    outcomes = graded([((e.name, m.id), _submission(e, m.code, cut[e.name]), e.own)
                       for e in found for m in e.mutants])
    return found, outcomes


def report(assignment: str, found: list[Exercise], outcomes: dict, seconds: float) -> list[str]:
    """Print the chapter's table; return its survivors' lines."""
    print(f"\n{assignment}  (seed {_STATE.get('seed', '?')}, {seconds:.0f} s)")
    print(f"  {'exercise':<30} {'mutants':>7} {'killed':>6} {'survived':>8} {'equiv':>5} {'error':>5} "
          f"{'score':>6}  own test cells")
    totals = [0, 0, 0, 0, 0]
    survivors = []
    for e in found:
        killed = survived = equivalent = errors = 0
        for m in e.mutants:
            outcome, first, took = outcomes[e.name, m.id]
            reason = EQUIVALENT.get((assignment, e.name, m.id))
            if outcome is None:  # the grader failed: not a verdict of the hidden cases
                errors += 1
                survivors.append(f"  grader error: {assignment} / {e.name}  {m.id}: {first}")
                survivors += [f"      {line}" for line in m.diff]
            elif reason is not None:
                equivalent += 1
                if _killed(outcome):
                    survivors.append(f"  stale mark: {e.name} {m.id} is killed ({first}); remove it from EQUIVALENT")
            elif _killed(outcome):
                killed += 1
            else:
                survived += 1
                cells = ", ".join(f"{g} {p}/{t}" for g, (p, t) in outcome.items())
                survivors.append(f"  {assignment} / {e.name}  {m.id}  ({cells})")
                survivors += [f"      {line}" for line in m.diff]
        n = len(e.mutants)
        score = f"{100 * killed / (killed + survived):.0f}%" if killed + survived else "-"
        extra = f" (+{e.skipped} not compiling)" if e.skipped else ""
        print(f"  {e.name:<30} {n:>7} {killed:>6} {survived:>8} {equivalent:>5} {errors:>5} {score:>6}  "
              f"{', '.join(e.own)}{extra}")
        for i, v in enumerate((n, killed, survived, equivalent, errors)):
            totals[i] += v
    n, killed, survived, equivalent, errors = totals
    score = f"{100 * killed / (killed + survived):.0f}%" if killed + survived else "-"
    print(f"  {'TOTAL':<30} {n:>7} {killed:>6} {survived:>8} {equivalent:>5} {errors:>5} {score:>6}")
    return survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT")
    parser.add_argument("--limit", type=int, help="mutants per exercise at most (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="grading seed of the hidden inputs")
    parser.add_argument("--jobs", type=int, default=1, help="mutants graded at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--call-timeout", type=float, help="seconds per hidden call (default: the grader's)")
    parser.add_argument("--list", action="store_true", help="print the mutants, grade nothing")
    parser.add_argument("--verbose", "-v", action="store_true", help="a line per graded mutant")
    args = parser.parse_args()
    chapters = args.assignments or assignments()
    if args.list:
        for assignment in chapters:
            for e in exercises(assignment):
                ms = chosen(e.mutants, args.limit)
                print(f"{assignment} / {e.name}: {len(ms)} mutants, own cells {e.own}")
                for m in ms:
                    print(f"  {m.id}: " + " | ".join(m.diff))
        return
    _STATE["seed"] = args.seed
    survivors = []
    for assignment in chapters:
        start = time.perf_counter()
        found, outcomes = run_chapter(assignment, args)
        survivors += report(assignment, found, outcomes, time.perf_counter() - start)
    print("\nSurvivors (add a hidden case that sees each, or mark it in EQUIVALENT with the reason):")
    print("\n".join(survivors) if survivors else "  none")


if __name__ == "__main__":
    main()
