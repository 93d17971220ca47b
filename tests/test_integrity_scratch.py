"""Attack class: links planted in the scratch folder the grader shares with the kernel.

The grader writes each call's inputs into the kernel's scratch folder and reads the result
back from there. A linker's ``one_hot`` finds its input file, and puts a symbolic link where
the result will be, pointing at an absolute path that means one thing inside the sandbox and
another on the host (the class of bug behind Judge0's CVE-2024-28185/28189): the grader must
refuse the link instead of reading the host's file. The assignment's own data files reach the
kernel's working folder (a reader of them scores full marks).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from conftest import ASSIGNMENT, grade_class, make_submission, reference_code

FULL = 10.0
TOKEN = uuid.uuid4().hex[:10]
HOST_FILE = f"/tmp/autograder-link-{TOKEN}.pt"
LINKER = f'''
import glob, os

def one_hot(ids, num_classes):
    (given,) = glob.glob("/scratch/*.in.pt")  # this call's inputs, written by the grader
    os.symlink({HOST_FILE!r}, given[:-len(".in.pt")] + ".out.pt")  # the result goes through it
    return torch.nn.functional.one_hot(ids, num_classes).float()
'''
DATA_READER = '''
with open("notes.txt") as f:
    assert f.read() == "data shipped with the assignment\\n"
'''


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    for folder in ("solutions", "exercises"):
        (course / folder / ASSIGNMENT / "notes.txt").write_text("data shipped with the assignment\n")
    torch.save("a file of the host, not the student's result", HOST_FILE)
    reader = reference_code(course)["one_hot"] + DATA_READER
    try:
        return grade_class(course, ASSIGNMENT, {
            "linker": make_submission(course, replace={"one_hot": LINKER}),
            "datareader": make_submission(course, replace={"one_hot": reader}),
        }, tmp_path_factory.mktemp("downloads"))
    finally:
        Path(HOST_FILE).unlink()
        for folder in ("solutions", "exercises"):
            (course / folder / ASSIGNMENT / "notes.txt").unlink()


def test_a_planted_result_link_is_refused_not_followed(graded):
    report = graded["linker"]["report"]["test_one_hot"]
    assert "its result file was replaced" in report, report
    assert graded["linker"]["score"] == FULL - 1 - 1  # one_hot, and embed which calls it


def test_the_assignment_data_files_are_in_the_working_folder(graded):
    assert graded["datareader"]["score"] == FULL, graded["datareader"]["report"]
