"""A tiny tagged corpus for sequence labelling (Chapter 2), generated from a seeded grammar.

Provenance: written for this course; nothing is downloaded or copied. Every sentence is drawn
from the small weighted context-free grammar :data:`GRAMMAR` below with a seeded
:class:`random.Random`, so a data set is a seed and the corpus needs no file. Each terminal
carries its part-of-speech tag (a subset of the Universal Dependencies tags), so the tags are
correct by construction.

Why this grammar: two words are ambiguous on purpose, as in "I saw a saw":

* ``saw`` and ``felt`` are verbs (past tense) after a subject ("I saw", "the dog felt") and
  nouns after a determiner or an adjective ("a saw", "the red felt");
* ``that`` is a determiner before a noun ("that dog") and a relative pronoun after one
  ("the girl that saw ...").

A tagger that looks at one word at a time must give every ``saw`` the same tag. One neighbour
on each side settles almost every case, except "that saw that": in "the man that saw that dog"
``saw`` is a verb, in "I found that saw that you liked" it is a noun, and the deciding word lies
two places away. So a window of one neighbour per side cannot tag that pattern and a window of
two can.

Words and tags are strings; :func:`vocab` and :func:`tensors` turn them into padded id tensors
(word id 0 is ``<pad>``, 1 is ``<unk>`` as in Chapter 1; padded tag positions hold
:data:`IGNORE` = -100, the default ``ignore_index`` of ``F.cross_entropy``).

    >>> from autograder.data import tagging
    >>> tagging.generate(1, seed=7)
    [(['I', 'saw', 'my', 'girl', '.'], ['PRON', 'VERB', 'DET', 'NOUN', 'PUNCT'])]
    >>> words, tags, lengths = tagging.tensors(tagging.generate(64, seed=1))
"""

from __future__ import annotations

import random

import torch
from torch.nn.utils.rnn import pad_sequence

PAD, UNK = "<pad>", "<unk>"
IGNORE = -100
TAGS = ("PRON", "DET", "ADJ", "NOUN", "VERB", "ADP", "PUNCT")
AMBIGUOUS = ("saw", "felt", "that")

# Terminal word lists, one per tag-bearing category. "saw" and "felt" are in both NOUN and VERB.
_WORDS = {
    "SUBJ_PRON": ["I", "we", "they", "you"],
    "DET": ["the", "a", "my"],
    "ADJ": ["big", "sharp", "small", "red"],
    "NOUN": ["man", "girl", "dog", "log", "box", "saw", "felt"],
    "VERB": ["found", "liked", "cut", "bought", "saw", "felt"],
    "ADP": ["with", "near", "on"],
}
_TAG_OF = {"SUBJ_PRON": "PRON", "DET": "DET", "ADJ": "ADJ", "NOUN": "NOUN", "VERB": "VERB",
           "ADP": "ADP"}

# Nonterminal -> list of (weight, right-hand side). A right-hand side item is a nonterminal,
# a word category of _WORDS, or a fixed (word, tag) pair.
GRAMMAR: dict[str, list[tuple[int, tuple]]] = {
    "S": [(1, ("SUBJ", "VP", (".", "PUNCT")))],
    "SUBJ": [(3, ("SUBJ_PRON",)), (2, ("NP",)), (2, ("NP", "REL_SUBJ"))],
    "REL_SUBJ": [(1, (("that", "PRON"), "VERB", "OBJ"))],        # the man that saw the dog
    "VP": [(3, ("VERB", "OBJ")), (1, ("VERB", "OBJ", "PP"))],
    "OBJ": [(3, ("NP",)), (1, ("DEM",)), (1, ("DEM", "REL_OBJ"))],
    "DEM": [(1, (("that", "DET"), "NOUN"))],                      # that saw
    "REL_OBJ": [(1, (("that", "PRON"), "SUBJ_PRON", "VERB"))],    # that you liked
    "NP": [(2, ("DET", "NOUN")), (1, ("DET", "ADJ", "NOUN"))],
    "PP": [(1, ("ADP", "NP"))],
}


def _expand(symbol, rng: random.Random, out: list[tuple[str, str]]) -> None:
    if isinstance(symbol, tuple):
        out.append(symbol)
    elif symbol in _WORDS:
        out.append((rng.choice(_WORDS[symbol]), _TAG_OF[symbol]))
    else:
        weights, options = zip(*GRAMMAR[symbol])
        for item in rng.choices(options, weights)[0]:
            _expand(item, rng, out)


def generate(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``n`` sentences drawn from :data:`GRAMMAR`, each as (words, tags) of equal length."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        pairs: list[tuple[str, str]] = []
        _expand("S", rng, pairs)
        words, tags = map(list, zip(*pairs))
        sentences.append((words, tags))
    return sentences


def vocab() -> list[str]:
    """Index -> word: ``<pad>``, ``<unk>``, then every word of the grammar in sorted order."""
    words = {w for ws in _WORDS.values() for w in ws} | {"that", "."}
    return [PAD, UNK, *sorted(words)]


def tensors(sentences: list[tuple[list[str], list[str]]], words: list[str] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Word ids (B, T) padded with 0, tag ids (B, T) padded with ``IGNORE``, lengths (B,)."""
    index = {w: i for i, w in enumerate(words or vocab())}
    tag_index = {t: i for i, t in enumerate(TAGS)}
    ids = [torch.tensor([index.get(w, 1) for w in ws]) for ws, _ in sentences]
    tags = [torch.tensor([tag_index[t] for t in ts]) for _, ts in sentences]
    lengths = torch.tensor([len(ws) for ws, _ in sentences])
    return (pad_sequence(ids, batch_first=True, padding_value=0),
            pad_sequence(tags, batch_first=True, padding_value=IGNORE), lengths)
