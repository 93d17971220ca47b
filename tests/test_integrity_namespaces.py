"""Attack class: undoing the sandbox from inside (unmount, remount read-write, new namespaces).

The attacker's notebook is correct except ``one_hot``, which it tries to steal: first it tries
every way to get out of its sandbox, then it reads the reference notebook and runs its code.
It reports what each attempt did through the error ``one_hot`` raises when the theft fails.
"""

from __future__ import annotations

import pytest

from autograder.sandbox import package_dir
from conftest import ASSIGNMENT, grade_class, make_submission, observations

FULL = 10.0
ATTACK = '''
import ctypes, json, os, subprocess
COURSE, PACKAGE = {course!r}, {package!r}
OBS, libc = {{}}, ctypes.CDLL(None, use_errno=True)

def _c(ret):
    if ret != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

def _try(name, attempt):
    try:
        attempt()
        OBS[name] = "ok"
    except Exception as exc:
        OBS[name] = type(exc).__name__

MS_REMOUNT, MS_BIND, MNT_DETACH = 32, 4096, 2
_try("unmount the package", lambda: _c(libc.umount2(PACKAGE.encode(), MNT_DETACH)))
_try("unmount /scratch", lambda: _c(libc.umount2(b"/scratch", MNT_DETACH)))
_try("remount / read-write", lambda: _c(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None)))
_try("remount the package read-write", lambda: _c(libc.mount(None, PACKAGE.encode(), None, MS_REMOUNT | MS_BIND, None)))
_try("mount a tmpfs", lambda: _c(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)))
_try("new user namespace", lambda: _c(libc.unshare(0x10000000)))
_try("new mount namespace", lambda: _c(libc.unshare(0x00020000)))
_try("unshare -Ur", lambda: subprocess.run(["unshare", "-Ur", "true"], check=True, capture_output=True))
_try("chroot", lambda: os.chroot("/tmp"))
_try("setuid 0", lambda: os.setuid(0) if os.getuid() != 0 else os.setuid(1))
_try("write /", lambda: open("/escaped", "w").close())

def one_hot(ids, num_classes):
    try:
        reference = json.load(open(COURSE + "/solutions/01-tokens/tokens.ipynb"))
    except Exception as exc:
        OBS["read the reference"] = type(exc).__name__
        raise RuntimeError("OBS" + json.dumps(OBS) + "SBO")
    namespace = {{"torch": torch}}
    exec(next("".join(c["source"]) for c in reference["cells"] if "def one_hot(" in "".join(c["source"])),
         namespace)
    return namespace["one_hot"](ids, num_classes)
'''


@pytest.fixture(scope="module")
def graded(course, tmp_path_factory):
    attack = ATTACK.format(course=str(course), package=package_dir())
    return grade_class(course, ASSIGNMENT, {"escaper": make_submission(course, replace={"one_hot": attack})},
                       tmp_path_factory.mktemp("downloads"), "--timeout", "10")


def test_no_way_out_of_the_sandbox(graded):
    seen = observations(graded["escaper"]["report"]["test_one_hot"])
    assert len(seen) == 12, seen
    assert all(outcome != "ok" for outcome in seen.values()), seen
    assert seen["read the reference"] == "FileNotFoundError", seen


def test_the_attacker_earns_nothing_for_one_hot(graded):
    assert graded["escaper"]["score"] == FULL - 1 - 1  # one_hot, and embed which calls it
