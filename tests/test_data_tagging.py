"""The tagging corpus: deterministic, grammatical by construction, ambiguous where it says."""

from __future__ import annotations

from collections import Counter

import torch

from autograder.data import tagging


def test_sentences_are_deterministic_and_well_formed():
    sentences = tagging.generate(500, seed=4)
    assert sentences == tagging.generate(500, seed=4) != tagging.generate(500, seed=5)
    words = set(tagging.vocab())
    for ws, ts in sentences:
        assert len(ws) == len(ts) >= 4 and ws[-1] == "." and ts[-1] == "PUNCT"
        assert set(ws) <= words and set(ts) <= set(tagging.TAGS)


def test_ambiguous_words_take_both_tags_and_one_neighbour_is_not_always_enough():
    sentences = tagging.generate(2000, seed=0)
    tags_of = {w: Counter() for w in tagging.AMBIGUOUS}
    context = {}  # (left, word, right) -> tags seen
    for ws, ts in sentences:
        padded = ["<pad>", *ws, "<pad>"]
        for i, (w, t) in enumerate(zip(ws, ts)):
            if w in tags_of:
                tags_of[w][t] += 1
            context.setdefault(tuple(padded[i:i + 3]), set()).add(t)
    assert set(tags_of["saw"]) == set(tags_of["felt"]) == {"NOUN", "VERB"}
    assert set(tags_of["that"]) == {"DET", "PRON"}
    assert context[("that", "saw", "that")] == {"NOUN", "VERB"}  # the clue lies two words away


def test_two_neighbours_always_decide():
    context = {}
    for ws, ts in tagging.generate(2000, seed=1):
        padded = ["<pad>"] * 2 + ws + ["<pad>"] * 2
        for i, t in enumerate(ts):
            context.setdefault(tuple(padded[i:i + 5]), set()).add(t)
    assert all(len(tags) == 1 for tags in context.values())


def test_tensors_pad_words_with_zero_and_tags_with_ignore():
    sentences = tagging.generate(30, seed=2)
    ids, tags, lengths = tagging.tensors(sentences)
    assert ids.shape == tags.shape == (30, int(lengths.max()))
    vocab = tagging.vocab()
    assert vocab[:2] == ["<pad>", "<unk>"]
    for b, (ws, ts) in enumerate(sentences):
        n = len(ws)
        assert [vocab[i] for i in ids[b, :n]] == ws
        assert [tagging.TAGS[i] for i in tags[b, :n]] == ts
        assert torch.all(ids[b, n:] == 0) and torch.all(tags[b, n:] == tagging.IGNORE)


def test_docstring_example_is_what_the_module_returns():
    import doctest

    result = doctest.testmod(tagging)
    assert result.attempted >= 2 and result.failed == 0
