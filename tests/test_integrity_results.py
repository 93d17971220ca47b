"""Attack class: results that stall or balloon the grader. A student controls every byte of the
result file their call leaves behind, and a few bytes can describe gigabytes: a compressed record,
an ``expand()`` view, a list that holds itself a thousand times. The grader loads a student's
result only within a multiple of the reference's size (:mod:`autograder.results`), formats values
without reading them whole, and an exception while judging fails that case only."""

from __future__ import annotations

import concurrent.futures
import io
import re
import time
import zipfile

import nbformat
import pytest
import torch

from autograder import grading, process, results
from autograder.compare import describe_difference
from autograder.grading import CellReport, _explain, _judge
from autograder.spec import Case, Hint
from conftest import ASSIGNMENT, grade_class, make_submission

EXPECTED = torch.zeros(3)  # what the reference returns in these attacks
INFLATED_MB = 512
ATTACKS = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"""
import io, zipfile, torch
def sparse(): return torch.eye(3).to_sparse()
def expanded(): return torch.zeros(1).expand(10**8)  # 400 MB at its logical size, 4 bytes on disk
def self_similar():
    x = [0] * 1000
    return [[x] * 1000] * 1000  # 10**9 items
def broadcast(): return torch.ones(3).expand(2, 3)[0]  # a small expand() view: legitimate

class Inflate: pass
def inflate(): return Inflate()
_save = torch.save
def _deflating_save(obj, f, *args, **kwargs):
    if not isinstance(obj, Inflate):
        return _save(obj, f, *args, **kwargs)
    honest = io.BytesIO()
    _save(torch.zeros(3), honest)
    with zipfile.ZipFile(honest) as src, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            with out.open(info.filename, "w", force_zip64=True) as record:
                if info.filename.endswith("/data/0"):
                    for _ in range({INFLATED_MB}):
                        record.write(bytes(2**20))
                else:
                    record.write(src.read(info))
torch.save = _deflating_save  # the grader's own call saves the result with it
""")])


def _peak_growth(action) -> tuple[object, int]:
    """``action()``'s result and how far this process's peak memory rose above its memory before."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    before = _status("VmHWM")
    outcome = action()
    return outcome, _status("VmHWM") - before


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _deflated(data: bytes, records_mb: int) -> bytes:
    """``data``'s archive with every record deflated, and its storage grown to ``records_mb`` MB of zeros."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            with dst.open(info.filename, "w", force_zip64=True) as record:
                if info.filename.endswith("/data/0"):
                    for _ in range(records_mb):
                        record.write(bytes(2**20))
                else:
                    record.write(src.read(info))
    return out.getvalue()


class _Converted:
    """Pickles as torch's rebuilder that converts a tensor's dtype: an ``expand()`` view made whole."""

    def __reduce__(self):
        return torch._utils._rebuild_device_tensor_from_cpu_tensor, (
            torch.zeros(1).expand(2 * 10**7), torch.complex128, "cpu", False)


@pytest.fixture(scope="module")
def attacked():
    """Each attack's error from one sandboxed kernel (never its value: printing that may be the
    attack), and the grader's peak memory rise for it."""
    found = {}
    with process.NotebookProcess(ATTACKS) as kernel:
        for name in ("inflate", "expanded", "self_similar", "sparse"):
            result, growth = _peak_growth(lambda: kernel.call(name, (), expected=EXPECTED))
            found[name] = result.error, growth
        found["broadcast"] = kernel.call("broadcast", (), expected=EXPECTED)  # legitimate
    return found


def test_a_compressed_record_is_refused_before_it_inflates(attacked):
    error, growth = attacked["inflate"]
    assert error and "compressed" in error, error
    assert growth < 64 * 2**20, f"the grader grew by {growth / 2**20:.0f} MB"
    data = _deflated(_saved(EXPECTED), INFLATED_MB)
    assert len(data) < 2**20 <= INFLATED_MB * 2**20
    (refusal, growth) = _peak_growth(lambda: pytest.raises(results.Refused, results.load, data))
    assert "compressed" in str(refusal.value) and growth < 64 * 2**20, growth  # the reference's too


@pytest.mark.parametrize("bomb", [torch.zeros(1).expand(10**8), _Converted()], ids=["expand", "converted"])
def test_a_tensor_far_larger_than_its_file_is_refused_without_being_made(bomb):
    data = _saved(bomb)
    assert len(data) < 2**12
    start = time.perf_counter()
    refusal, growth = _peak_growth(lambda: pytest.raises(results.Refused, results.load, data,
                                                         results.Allowance.of(EXPECTED)))
    assert time.perf_counter() - start < 1 and growth < 64 * 2**20, growth
    assert re.search(r"returned far more data than expected: at least [\d.]+ MB where the reference "
                     r"returns 12 bytes|does not load \(torch._utils _rebuild_device", str(refusal.value)), refusal.value


def test_an_oversized_or_small_expand_view_through_the_kernel(attacked):
    error, growth = attacked["expanded"]
    assert error and "returned far more data than expected" in error, error
    assert growth < 64 * 2**20, growth
    small = attacked["broadcast"]  # a legitimate view is judged like any tensor, and passes
    assert small.error is None and small.value.is_contiguous(), small.error
    assert Case("broadcast", lambda g: (), "view").judge(small.value, torch.ones(3), ()) is None


def test_a_list_that_holds_itself_costs_microseconds(attacked):
    error, _ = attacked["self_similar"]
    assert error and "returned far more data than expected" in error, error
    x = [0] * 1000
    bomb = [[x] * 100] * 100  # 10**7 items, as a reference-free comparison would see it
    data = _saved(bomb)
    start = time.perf_counter()
    with pytest.raises(results.Refused, match="far more data"):
        results.load(data, results.Allowance.of(EXPECTED))
    assert time.perf_counter() - start < 0.5
    start = time.perf_counter()  # the public checks' messages read a few items only
    message = describe_difference(bomb, "abc")
    assert time.perf_counter() - start < 0.1 and len(message) < 200, message


def test_a_sparse_result_fails_its_own_case_only(attacked, course, tmp_path):
    error, _ = attacked["sparse"]
    assert error and "returned a sparse tensor (torch.sparse_coo); return a dense one" in error, error
    sparse_on_1d = ("import sys\n"
                    "def one_hot(ids, num_classes):\n"
                    "    out = torch.zeros(*ids.shape, num_classes, device=ids.device).scatter(-1, ids.unsqueeze(-1), 1.0)\n"
                    "    called_by_the_grader = sys._getframe(1).f_code.co_name != 'embed'\n"
                    "    return out.to_sparse() if ids.dim() == 1 and called_by_the_grader else out  # case 0 only\n")
    summary = grade_class(course, ASSIGNMENT, {"sparse": make_submission(course, replace={"one_hot": sparse_on_1d})},
                          tmp_path)
    report = summary["sparse"]["report"]["test_one_hot"]
    assert "4/5 hidden checks passed" in report and "sparse tensor" in report and "Traceback" not in report, report
    points = float(re.search(r"of ([\d.]+) points", report).group(1))
    assert summary["sparse"]["score"] == pytest.approx(10.0 - points / 5), summary["sparse"]["report"]


def test_an_exception_while_judging_fails_that_case_only():
    def broken_check(got, expected, args):
        raise RuntimeError("a course bug, or a value it never met\nTraceback (most recent call last)")
    raising_hint = Hint("never shown", lambda got, expected, args: 1 / 0)
    verdict = _judge(Case("f", lambda g: (), "odd", check=broken_check), 1, 2, ())
    assert verdict.message.startswith("the grader could not compare your result") and not verdict.hints
    assert "Traceback" not in str(verdict) and "course bug" not in str(verdict)
    verdict = _judge(Case("f", lambda g: (), "odd", (raising_hint,)), torch.ones(2), object(), ())
    assert verdict is not None and not verdict.hints  # describe_difference cannot compare an object
    assert _judge(Case("f", lambda g: (), "odd", (raising_hint,)), 1, 2, ()).hints == ()


def test_judging_one_result_has_a_time_limit_in_any_thread(monkeypatch):
    """A result whose judging runs on (here a hint that never ends, inside a guard of its own
    that catches every Exception) fails its case after JUDGE_SECONDS, also in a worker thread
    (Dask's), where no signal reaches; the next case is judged as usual."""
    monkeypatch.setattr(grading, "JUDGE_SECONDS", 0.5)

    def endless(got, expected, args):
        while True:
            try:
                sum(range(1000))
            except Exception:
                pass
    slow = Case("f", lambda g: (), "slow", (Hint("never shown", endless),))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for run in (lambda f: f(), lambda f: pool.submit(f).result(timeout=30)):
            start = time.monotonic()
            verdict = run(lambda: _judge(slow, 1, 2, ()))
            assert time.monotonic() - start < 5
            assert verdict.message.startswith("the grader could not compare your result with the expected one "
                                              "within 0.5 s"), verdict
            assert _judge(slow, 2, 2, ()) is None
            time.sleep(0.7)  # a deadline that was met never fires later


def test_a_students_hint_text_is_never_a_hint_in_the_record():
    report = CellReport("test_f", 2.0, passed=1, total=3)
    fake = _explain("raised ValueError: boom\nHint: fake (at: f())")
    real = _explain("raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")
    report.failures[fake, ""] = ["case 1"]
    report.failures[real, "\nArguments (small enough to try yourself): 1, 2"] = ["case 2"]
    report.problems.append("timeout")
    record = report.record()
    assert record["failures"][0] == {"message": "raised ValueError: boom\nHint: fake (at: f())",
                                     "hints": [], "labels": ["case 1"]}
    assert record["failures"][1]["hints"] == [real.hints[0]] and "shapes of a product" in real.hints[0]
    assert record["failures"][1]["message"].endswith("\nArguments (small enough to try yourself): 1, 2")
    assert {k: record[k] for k in ("grade_id", "points", "score", "passed", "total", "notes", "problems")} == {
        "grade_id": "test_f", "points": 2.0, "score": 0.67, "passed": 1, "total": 3, "notes": [],
        "problems": ["timeout"]}
    assert report.text() == (  # what the student reads is unchanged
        "test_f: 1/3 hidden checks passed, 0.67 of 2 points\n"
        "✗ case 1: raised ValueError: boom\n    Hint: fake (at: f())\n"
        "✗ case 2: raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)\n"
        f"    Hint: {real.hints[0]}\n    Arguments (small enough to try yourself): 1, 2\n")
