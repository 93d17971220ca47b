"""Chapter 1 — tokens, one-hot vectors and embeddings: public checks and hidden cases.

The ``check_*`` functions run in the student's notebook, on small examples that can be
verified by hand and on properties any correct answer has. ``CASES`` is what the grader
runs: the same calls on random inputs, the student's result compared with the reference
notebook's. This module holds no reference solution on purpose (students can read it).

The typical mistakes and their hints are the chapter's catalogue,
``solutions/01-tokens/mistakes.yaml``: the grader and these checks name a mistake when a
result is that mistake's result. Its ``uses`` lets a ``one_hot`` mistake be named in
``embed``'s cell, and a ``merge_pair`` mistake (in ``train_bpe``'s cell) in ``bpe_encode``'s.
The one hint left here is for a mistake the catalogue cannot hold: :data:`ONE_HOT_DEVICE` (no
CPU result shows it).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..checks import call, expect_example, pick, randint
from ..spec import Case, CheckFailed, Hint, expect, passed

PAD, UNK = "<pad>", "<unk>"


# ----------------------------------------------------------------------------------------
# Hints that are not catalogue mistakes, each true exactly when a result is what it says
# ----------------------------------------------------------------------------------------

# On the CPU a result that ignores ids.device is right: only a GPU grader (and the public
# check, on the 'meta' device) can see this mistake.
ONE_HOT_DEVICE = Hint(
    "the result must live on ids.device: create tensors with device=ids.device "
    "(torch.eye(V) or torch.zeros(...) alone are on the CPU).",
    lambda got, exp, args: got.device.type != exp.device.type)


# ----------------------------------------------------------------------------------------
# Public checks (run in the student's notebook)
# ----------------------------------------------------------------------------------------

def check_build_vocab(build_vocab: Callable) -> None:
    """Hand-countable token lists covering order, ties, min_freq and special tokens."""
    examples = [
        ((["b", "a", "b", "c", "a", "b"],), [PAD, UNK, "b", "a", "c"],
         "counts are b: 3, a: 2, c: 1; '<pad>' and '<unk>' come first."),
        ((["y", "x", "z", "z", "x", "y"],), [PAD, UNK, "x", "y", "z"],
         "x, y and z all occur twice: ties go in string order, not in the order they are first seen."),
        ((["b", "B", "a"],), [PAD, UNK, "B", "a", "b"],
         "all counts tie; in Python string order uppercase comes first ('B' < 'a' < 'b')."),
        ((["a", "b", "a", "c", "c", "a"], 2), [PAD, UNK, "a", "c"],
         "min_freq=2 keeps a (3) and c (2, equal to min_freq) and drops b (1)."),
        ((["<unk>", "a", "<unk>", "<pad>"],), [PAD, UNK, "a"],
         "special tokens found in the input keep their reserved slots and are not repeated."),
        (([], 1), [PAD, UNK], "an empty input still has the two special tokens."),
    ]
    for args, expected, why in examples:
        shown = f"build_vocab({', '.join(map(repr, args))})"
        expect_example(call(build_vocab, shown, *args), expected, shown, why)
    passed("build_vocab", len(examples))


def check_encode_decode(encode: Callable, decode: Callable) -> None:
    """A five-word vocabulary: known words, unknown words, empty input, round trips."""
    vocab = [PAD, UNK, "the", "cat", "sat"]
    tokens = ["the", "cat", "sat", "on", "the", "mat"]
    shown = f"encode({tokens}, vocab={vocab})"
    expect_example(call(encode, shown, tokens, vocab), [2, 3, 4, 1, 2, 1], shown,
                   "'on' and 'mat' are not in the vocabulary: they become 1, the index of '<unk>'.")
    expect_example(call(encode, "encode([], vocab)", [], vocab), [], "encode([], vocab)")
    ids = [2, 3, 4, 1, 0]
    shown = f"decode({ids}, vocab={vocab})"
    expect_example(call(decode, shown, ids, vocab), ["the", "cat", "sat", UNK, PAD], shown,
                   "decode looks each id up: vocab[id].")
    expect_example(call(decode, "decode([], vocab)", [], vocab), [], "decode([], vocab)")
    for tokens, expected in ((["sat", "cat", "the"], ["sat", "cat", "the"]),
                             (["the", "dog", "sat"], ["the", UNK, "sat"])):
        shown = f"decode(encode({tokens}, vocab), vocab)"
        got = call(lambda t: decode(encode(t, vocab), vocab), shown, tokens)
        expect_example(got, expected, shown,
                       "a round trip gives back the tokens, with unknown ones replaced by '<unk>'.")
    passed("encode/decode", 6)


def check_one_hot(one_hot: Callable) -> None:
    """A 2x2 batch with V=3 written out in full, then shape, dtype and device rules."""
    count = 0
    ids = torch.tensor([[0, 2], [1, 1]])
    batch = torch.tensor([[[1., 0., 0.], [0., 0., 1.]],
                          [[0., 1., 0.], [0., 1., 0.]]])
    shown = "one_hot(torch.tensor([[0, 2], [1, 1]]), 3)"
    expect_example(call(one_hot, shown, ids, 3), batch, shown,
                   "row [b, t] is all zeros except a 1.0 in column ids[b, t].")
    count += 1
    for ids, num_classes, expected, why in (
            (torch.tensor([0, 1]), 4, torch.tensor([[1., 0., 0., 0.], [0., 1., 0., 0.]]),
             "the last dimension is num_classes (4), not max(ids) + 1."),
            (torch.tensor(1), 2, torch.tensor([0., 1.]),
             "a single id (a 0-d tensor) gives a vector of shape (num_classes,)."),
            (torch.tensor([[[2]]]), 3, torch.tensor([[[[0., 0., 1.]]]]),
             "size-1 dimensions are kept: (1, 1, 1) -> (1, 1, 1, 3).")):
        shown = f"one_hot(torch.tensor({ids.tolist()}), {num_classes})"
        expect_example(call(one_hot, shown, ids, num_classes), expected, shown, why)
        count += 1
    ids = torch.tensor([[0, 2], [1, 1]], device="meta")  # shapes and devices only, no values
    shown = "one_hot(torch.tensor([[0, 2], [1, 1]], device='meta'), 3)"
    try:
        got = one_hot(ids, 3)
    except Exception as error:
        if isinstance(error, NotImplementedError) and "meta" not in str(error):
            call(one_hot, shown, ids, 3)  # the exercise is not written yet: say so
        raise CheckFailed(
            f"{shown} raised {type(error).__name__}: {error}\nHint: this check passes ids on "
            "PyTorch's 'meta' device (shapes, no values) to see that your result follows "
            f"ids.device without a GPU. {ONE_HOT_DEVICE.text} Avoid .cpu(), .item() and "
            ".tolist() on ids.") from error
    if not isinstance(got, torch.Tensor) or got.device.type != "meta":
        raise CheckFailed(f"{shown}: expected a tensor on device 'meta' (the device of ids), got "
                          f"{got.device if isinstance(got, torch.Tensor) else type(got).__name__}\n"
                          f"Hint: {ONE_HOT_DEVICE.text}")
    if got.shape != (2, 2, 3) or got.dtype != torch.float32:
        raise CheckFailed(f"{shown}: expected shape (2, 2, 3) and dtype float32, got "
                          f"{tuple(got.shape)} {got.dtype}")
    count += 1
    if torch.cuda.is_available():  # the grader may run your code on a GPU
        ids = torch.tensor([[0, 2], [1, 1]], device="cuda")
        shown = "one_hot(torch.tensor([[0, 2], [1, 1]], device='cuda'), 3)"
        expect_example(call(one_hot, shown, ids, 3), batch.cuda(), shown,
                       "the result lives on the same device as ids.", (ONE_HOT_DEVICE,), (ids, 3))
        count += 1
    passed("one_hot", count)


def check_embed(embed: Callable) -> None:
    """Rows of a small integer-valued W picked by hand, then agreement with nn.Embedding."""
    W = torch.arange(12.).reshape(4, 3)  # row v is [3v, 3v + 1, 3v + 2]
    ids = torch.tensor([[3, 0], [1, 1]])
    expected = torch.tensor([[[9., 10., 11.], [0., 1., 2.]],
                             [[3., 4., 5.], [3., 4., 5.]]])
    shown = "embed(torch.tensor([[3, 0], [1, 1]]), W=torch.arange(12.).reshape(4, 3))"
    expect_example(call(embed, shown, ids, W), expected, shown,
                   "embed(ids, W)[b, t] is row ids[b, t] of W.")
    W = torch.arange(9.).reshape(3, 3)
    ids = torch.tensor([2, 0])
    shown = "embed(torch.tensor([2, 0]), W=torch.arange(9.).reshape(3, 3))"
    expect_example(call(embed, shown, ids, W), torch.tensor([[6., 7., 8.], [0., 1., 2.]]), shown,
                   "rows of W, not columns: row 2 is [6, 7, 8].")
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 7, (2, 3, 4), generator=g)
    shown = "embed(<random ids of shape (2, 3, 4)>, <random float64 W of shape (7, 5)>)"
    expect_example(call(embed, shown, ids, W), nn.Embedding.from_pretrained(W)(ids), shown,
                   "the result must equal nn.Embedding.from_pretrained(W)(ids), shape (2, 3, 4, 5), "
                   "dtype float64 like W.")
    passed("embed", 3)


def check_cosine(cosine_similarity_matrix: Callable) -> None:
    """Four 2-D vectors whose cosines are known by heart, the eps clamp, symmetry, scale invariance."""
    s = 2 ** -0.5
    E = torch.tensor([[1., 0.], [0., 2.], [1., 1.], [0., 0.]])
    expected = torch.tensor([[1., 0., s, 0.],
                             [0., 1., s, 0.],
                             [s, s, 1., 0.],
                             [0., 0., 0., 0.]])
    shown = "cosine_similarity_matrix([[1, 0], [0, 2], [1, 1], [0, 0]])"
    expect_example(call(cosine_similarity_matrix, shown, E), expected, shown,
                   "(1, 0) and (0, 2) are orthogonal (0); (1, 1) is at 45 degrees from both (1/sqrt(2)); "
                   "length does not matter; the zero vector gives 0.")
    E = torch.tensor([[0.01, 0.], [0., 1.]])
    shown = "cosine_similarity_matrix([[0.01, 0], [0, 1]], eps=0.1)"
    expect_example(call(cosine_similarity_matrix, shown, E, 0.1), torch.tensor([[0.01, 0.], [0., 1.]]),
                   shown, "the norm 0.01 of row 0 is below eps = 0.1, so row 0 is divided by 0.1, not by "
                   "its norm: cos(E_0, E_0) = (0.01 / 0.1)^2 = 0.01.")
    E = torch.tensor([[3., 4.], [4., 3.]], dtype=torch.float64)
    shown = "cosine_similarity_matrix(torch.tensor([[3, 4], [4, 3]], dtype=torch.float64))"
    expect_example(call(cosine_similarity_matrix, shown, E),
                   torch.tensor([[1., 0.96], [0.96, 1.]], dtype=torch.float64), shown,
                   "(3*4 + 4*3) / (5 * 5) = 0.96; the result keeps E's dtype (float64 here).")
    g = torch.Generator().manual_seed(0)
    E = torch.randn(6, 4, generator=g)
    scale = torch.rand(6, 1, generator=g) * 9 + 1
    C = call(cosine_similarity_matrix, "cosine_similarity_matrix(<random (6, 4)>)", E)
    if not isinstance(C, torch.Tensor) or C.shape != (6, 6):
        raise CheckFailed(f"cosine_similarity_matrix(<random (6, 4)>): expected a (6, 6) tensor, "
                          f"got {tuple(C.shape) if isinstance(C, torch.Tensor) else type(C).__name__}")
    expect(C, C.T, "the similarity matrix of a random (6, 4) E compared with its transpose",
           ["cos(E_i, E_j) = cos(E_j, E_i): the matrix is symmetric."])
    expect(C.diagonal(), torch.ones(6), "the diagonal for a random (6, 4) E",
           ["every non-zero vector has cosine 1 with itself."])
    expect(call(cosine_similarity_matrix, "cosine_similarity_matrix(E * scale)", E * scale), C,
           "the similarity matrix after scaling each row by a positive number",
           ["cosine similarity ignores lengths: normalise each row by its own norm."])
    passed("cosine_similarity_matrix", 6)


def check_train_bpe(train_bpe: Callable) -> None:
    """Texts short enough to run BPE on paper; each targets one rule of the contract."""
    examples = [
        (("dacb dacb", 1), [(100, 97)],
         "(100, 97) 'da', (97, 99) 'ac' and (99, 98) 'cb' tie at 2: the pair that occurs first "
         "wins, not the smallest pair or the last one seen."),
        (("aaabdaaabac", 3), [(97, 97), (256, 97), (257, 98)],
         "'aa' (97, 97) occurs 4 times -> 256; then (256, 97) and (97, 98) tie at 2 and (256, 97) "
         "occurs first -> 257; then (257, 98) -> 258."),
        (("aaaaabcbcbc", 1), [(97, 97)],
         "pairs overlap: 'aaaaa' holds (97, 97) four times, beating (98, 99) with three; counted "
         "without overlap it would have only two."),
        (("aaaaa", 5), [(97, 97), (256, 256), (257, 97)],
         "[97] * 5 -> [256, 256, 97] -> [257, 97] -> [258] (the last 97 is kept at every step): "
         "one id left, no pair, stop early."),
        (("é", 3), [(195, 169)], "BPE works on UTF-8 bytes: 'é' is the two bytes 195, 169."),
        (("", 3), [], "an empty text has no pairs."),
        (("abc", 0), [], "num_merges=0 learns nothing."),
    ]
    for args, expected, why in examples:
        shown = f"train_bpe({', '.join(map(repr, args))})"
        expect_example(call(train_bpe, shown, *args), expected, shown, why)
    passed("train_bpe", len(examples))


def check_bpe(bpe_encode: Callable, bpe_decode: Callable) -> None:
    """Encoding with given merges, decoding, and round trips through multi-byte characters."""
    merges = [(97, 97), (256, 97), (257, 98)]  # 256 = 'aa', 257 = 'aaa', 258 = 'aaab'
    encodes = [
        (("aaabdaaabac", merges), [258, 100, 258, 97, 99],
         "with 256 = 'aa', 257 = 'aaa', 258 = 'aaab', the text is 'aaab' 'd' 'aaab' 'a' 'c'."),
        (("aaa", [(97, 97)]), [256, 97], "replace left to right without overlap: 'aa' then 'a'."),
        (("aab", [(97, 98), (97, 97)]), [97, 256],
         "merge 0 (97, 98) goes first and uses up the 'ab'; merge 1 (97, 97) then finds nothing."),
        (("café", [(195, 169)]), [99, 97, 102, 256], "'é' is the bytes 195, 169, merged into 256."),
        (("🙂", [(195, 169), (240, 159), (257, 153)]), [258, 130],
         "'🙂' is the bytes 240, 159, 153, 130; merge 1 makes 257, merge 2 makes 258 "
         "(merge 0 does not occur but still owns 256)."),
        (("hé", []), [104, 195, 169], "with no merges the ids are the UTF-8 bytes, as a list of ints."),
        (("", merges), [], "an empty text has no tokens."),
    ]
    for args, expected, why in encodes:
        shown = f"bpe_encode({', '.join(map(repr, args))})"
        expect_example(call(bpe_encode, shown, *args), expected, shown, why)
    decodes = [
        (([258, 100, 258, 97, 99], merges), "aaabdaaabac", "258 expands to 257, 98, then to 256, 97, 98, then to the bytes of 'aaab'."),
        (([195, 169], []), "é", "'é' arrives as two tokens; decode all the bytes together."),
        (([99, 195], []), "c\ufffd", "a lone 195 is not valid UTF-8: it becomes '\ufffd' (errors='replace')."),
        (([], merges), "", "no ids, empty text."),
    ]
    for args, expected, why in decodes:
        shown = f"bpe_decode({', '.join(map(repr, args))})"
        expect_example(call(bpe_decode, shown, *args), expected, shown, why)
    text = "naïve café, 早上好 🙂"
    for merges in ([], [(195, 169), (240, 159), (257, 153), (230, 151)]):
        shown = f"bpe_decode(bpe_encode({text!r}, {merges}), {merges})"
        got = call(lambda t: bpe_decode(bpe_encode(t, merges), merges), shown, text)
        expect_example(got, text, shown, "decoding an encoding gives back the exact text.")
    passed("bpe_encode/bpe_decode", len(encodes) + len(decodes) + 2)


# ----------------------------------------------------------------------------------------
# Hidden cases: random inputs from the grader's seeded generator (CPU), never the global RNG
# ----------------------------------------------------------------------------------------

def _shuffled(g: torch.Generator, seq: list) -> list:
    return [seq[i] for i in torch.randperm(len(seq), generator=g).tolist()]


def _words(g: torch.Generator, n: int, alphabet: str, lo: int = 1, hi: int = 5,
           avoid: tuple[str, ...] = ()) -> list[str]:
    """``n`` distinct random words over ``alphabet`` with lengths in [lo, hi)."""
    words: list[str] = []
    while len(words) < n:
        word = "".join(pick(g, alphabet) for _ in range(randint(g, lo, hi)))
        if word not in words and word not in avoid:
            words.append(word)
    return words


def _stream(g: torch.Generator, words: list[str], lo: int, hi: int) -> list[str]:
    """Each word repeated a random number of times in [lo, hi), shuffled."""
    return _shuffled(g, [w for w in words for _ in range(randint(g, lo, hi))])


def _vocab_random(g):
    return (_stream(g, _words(g, randint(g, 10, 17), "abcdefgh"), 1, 5),)


def _vocab_min_freq(g):
    return _stream(g, _words(g, randint(g, 10, 17), "abcdefgh"), 1, 6), randint(g, 2, 4)


def _vocab_specials(g):
    tokens = _stream(g, _words(g, randint(g, 4, 8), "abcde"), 1, 4)
    tokens += [UNK] * randint(g, 5, 8) + [PAD] * randint(g, 4, 7)  # more frequent than any word
    return _shuffled(g, tokens), 1


def _vocab_all_rare(g):
    return _stream(g, _words(g, randint(g, 3, 9), "abcdef"), 1, 3), 3


def _vocab_unicode(g):
    return _stream(g, _words(g, randint(g, 10, 15), "aAbBéÉ早z", 1, 3), 1, 3), 1


def _vocab_tiny(g):
    return [pick(g, ["x", "é", "早"])] * randint(g, 0, 3), randint(g, 1, 3)


def _vocabulary(g, n, alphabet="abcdefg"):
    """A vocabulary in build_vocab's layout (specials first) and words that are not in it."""
    words = _words(g, n + 4, alphabet, 1, 4)
    return [PAD, UNK] + _shuffled(g, words[:n]), words[n:]


def _encode_args(g):
    vocab, unknown = _vocabulary(g, randint(g, 5, 12))
    tokens = [pick(g, vocab[2:] + unknown) for _ in range(randint(g, 8, 20))]
    return tokens, vocab


def _encode_specials_args(g):
    vocab, unknown = _vocabulary(g, randint(g, 1, 4), "éa早")
    return _shuffled(g, [PAD, UNK, *vocab[2:], *unknown, unknown[0]]), vocab


def _decode_args(g):
    vocab, _ = _vocabulary(g, randint(g, 4, 10))
    return torch.randint(0, len(vocab), (randint(g, 1, 15),), generator=g).tolist(), vocab


def _ids(g, shape, V, hit_ends=False):
    ids = torch.randint(0, V, shape, generator=g)
    if hit_ends and ids.numel() >= 2:
        ids.view(-1)[:2] = torch.tensor([V - 1, 0])  # both ends of the range
    return ids


def _one_hot_1d(g):
    V = randint(g, 4, 20)
    return _ids(g, (randint(g, 4, 12),), V, hit_ends=True), V


def _one_hot_2d(g):
    V = randint(g, 6, 16)
    return _ids(g, (randint(g, 2, 5), randint(g, 2, 7)), V - 3), V  # ids stay below V - 3


def _one_hot_3d(g):
    V = randint(g, 3, 9)
    return _ids(g, (randint(g, 2, 4), randint(g, 2, 4), randint(g, 2, 5)), V, hit_ends=True), V


def _one_hot_size_one(g):
    V = randint(g, 1, 4)
    return _ids(g, (1, 1, 1), V), V


def _one_hot_scalar(g):
    V = randint(g, 2, 10)
    return _ids(g, (), V), V


def _embed_args(g, ids_shape, V, d, dtype=torch.float32):
    return torch.randint(0, V, ids_shape, generator=g), torch.randn(V, d, generator=g, dtype=dtype)


def _cosine_random(g):
    N = randint(g, 3, 9)
    return (torch.randn(N, N + randint(g, 1, 4), generator=g),)  # d != N


def _cosine_zero_rows(g):
    E = torch.randn(randint(g, 4, 8), randint(g, 2, 5), generator=g)
    E[torch.randperm(E.shape[0], generator=g)[:2]] = 0
    return (E,)


def _cosine_parallel(g):
    base = torch.randn(3, randint(g, 2, 6), generator=g, dtype=torch.float64)
    factors = torch.tensor([2.0, -0.5, 3.0], dtype=torch.float64)[:, None]
    return (torch.cat([base, base * factors]),)  # rows i and i + 3 at cosine +-1


def _cosine_single_row(g):
    return (torch.randn(1, randint(g, 1, 5), generator=g),)


def _cosine_one_dim(g):
    E = torch.randn(randint(g, 4, 8), 1, generator=g)
    E[0] = 0
    return (E,)


def _cosine_large_eps(g):
    E = torch.randn(6, 3, generator=g)
    E[:3] *= 1e-3  # norms far below eps = 0.1: they are divided by eps, not their own norm
    return E, 0.1


def _text(g, alphabet, lo, hi):
    return "".join(pick(g, alphabet) for _ in range(randint(g, lo, hi)))


def _bpe_words(g):
    words = _words(g, randint(g, 4, 8), "abcde", 2, 6)
    return " ".join(pick(g, words) for _ in range(randint(g, 10, 25))), randint(g, 6, 13)


def _bpe_unicode(g):
    return _text(g, "aé早🙂 ", 15, 35), randint(g, 5, 10)


def _bpe_ties(g):
    letters = [chr(97 + i) for i in torch.randperm(8, generator=g).tolist()[:randint(g, 4, 7)]]
    if letters[0] == min(letters[:-1]):  # make "first occurring" and "smallest" disagree
        letters[0], letters[1] = letters[1], letters[0]
    return "".join(letters) * randint(g, 3, 6), randint(g, 3, 6)


def _bpe_overlap(g):
    c, x, y = (chr(97 + i) for i in torch.randperm(6, generator=g).tolist()[:3])
    r = randint(g, 6, 8)  # a run of r letters holds r - 1 overlapping pairs but only r // 2 disjoint ones
    parts = [c * r] + [x + y] * (r // 2 + 1)  # (x, y) beats the run only if overlaps are dropped
    return " ".join(_shuffled(g, parts)), randint(g, 4, 7)


def _bpe_run(g):
    return "a" * randint(g, 5, 13), 10  # merges until a single id is left, then stop early


def _bpe_one_char(g):
    return pick(g, ["a", "é", "早", "🙂"]), randint(g, 1, 6)


def _merges(g, data: bytes, n: int,
            first: tuple[tuple[int, int], ...] = ()) -> list[tuple[int, int]]:
    """``first`` then more distinct merges, up to ``n`` in all, well formed like a trained
    tokenizer's: merge k only joins ids that exist before it (bytes, or 256 .. 256 + k - 1)."""
    merges = list(first)
    pool = sorted(set(data) | {b for m in merges for b in m if b < 256}) + [
        256 + k for k in range(len(merges))]
    while len(merges) < n:
        if len(data) > 1 and randint(g, 0, 2) == 0:
            i = randint(g, 0, len(data) - 1)
            pair = (data[i], data[i + 1])  # a byte pair of the text
        else:
            pair = (pick(g, pool), pick(g, pool))  # may build on earlier merges
        if pair not in merges:
            merges.append(pair)
            pool.append(256 + len(merges) - 1)
    return merges


def _spelled_words(g):
    """Merges that build each word left to right, so every merge applies."""
    words = _words(g, randint(g, 2, 4), "abcdé早", 3, 6)
    merges: list[tuple[int, int]] = []
    for word in words:
        data = word.encode("utf-8")
        left = data[0]
        for byte in data[1:]:
            if (left, byte) not in merges:
                merges.append((left, byte))
            left = 256 + merges.index((left, byte))
    return " ".join(pick(g, words) for _ in range(randint(g, 4, 9))), merges


def _bpe_encode_runs(g):
    text = " ".join("a" * randint(g, 1, 9) for _ in range(randint(g, 3, 7))) + " b"
    return text, _merges(g, b"a ab", randint(g, 4, 7), first=((97, 97),))


def _bpe_encode_random(g):
    text = _text(g, "ab é早🙂", 20, 40)
    other = _text(g, "abc é🙂", 20, 40)  # merges "learned" on another text: some never apply
    return text, _merges(g, other.encode("utf-8"), randint(g, 6, 11))


def _bpe_decode_random(g):
    data = _text(g, "aé早🙂 ", 10, 20).encode("utf-8")
    merges = _merges(g, data, randint(g, 4, 9))
    pool = sorted(set(data)) + [256 + k for k in range(len(merges))]
    return [pick(g, pool) for _ in range(randint(g, 8, 25))], merges


def _bpe_decode_any_byte(g):
    """Every byte value can be an id, 0 and 255 too (text's UTF-8 never holds 0xFF)."""
    ids = [randint(g, 0, 256) for _ in range(randint(g, 6, 14))]
    for byte in (0, 255):
        ids.insert(randint(g, 0, len(ids) + 1), byte)
    return ids, _merges(g, bytes(ids), 3)


def _bpe_encode_no_merges(g):
    return _text(g, "ab é早🙂", 5, 15), []


def _bpe_decode_bytes(g):
    text = _text(g, "aé早🙂 ", 5, 15)
    return list(text.encode("utf-8")), _merges(g, text.encode("utf-8"), 3)


def _bpe_round_trip(g):
    text = _text(g, "héllo wörld 早上好 🙂", 15, 40)
    return text, _merges(g, text.encode("utf-8"), randint(g, 5, 12))


CASES: dict[str, list[Case]] = {
    "test_build_vocab": [
        Case("lambda tokens: build_vocab(tokens)", _vocab_random,
             "10-16 random words, counts 1-4 (many ties), default min_freq"),
        Case("build_vocab", _vocab_min_freq, "counts 1-5 with min_freq 2 or 3"),
        Case("build_vocab", _vocab_specials,
             "'<unk>' and '<pad>' in the input, more frequent than any word"),
        Case("build_vocab", _vocab_all_rare, "every token below min_freq=3"),
        Case("build_vocab", _vocab_unicode,
             "mixed-case and non-ASCII words with tied counts (Python string order)"),
        Case("build_vocab", _vocab_tiny, "empty input or one token repeated"),
    ],
    "test_encode_decode": [
        Case("encode", _encode_args, "encode: random vocabulary, some unknown tokens"),
        Case("encode", _encode_specials_args,
             "encode: tokens '<pad>', '<unk>', non-ASCII and unknown words"),
        Case("decode", _decode_args, "decode: random ids"),
        Case("lambda tokens, vocab: decode(encode(tokens, vocab), vocab)", _encode_args,
             "round trip: unknown tokens come back as '<unk>'"),
    ],
    "test_one_hot": [
        Case("one_hot", _one_hot_1d, "1-D ids hitting 0 and V - 1", (ONE_HOT_DEVICE,)),
        Case("one_hot", _one_hot_2d, "2-D (B, T) ids, largest id below V - 3", (ONE_HOT_DEVICE,)),
        Case("one_hot", _one_hot_3d, "3-D ids", (ONE_HOT_DEVICE,)),
        Case("one_hot", _one_hot_size_one, "shape (1, 1, 1), V of 1 to 3", (ONE_HOT_DEVICE,)),
        Case("one_hot", _one_hot_scalar, "a 0-d id", (ONE_HOT_DEVICE,)),
    ],
    "test_embed": [
        Case("embed", lambda g: _embed_args(g, (randint(g, 2, 5), randint(g, 2, 7)), randint(g, 5, 20),
                                            randint(g, 2, 5)),
             "(B, T) ids, float32 W with V > d"),
        Case("embed", lambda g: _embed_args(g, (randint(g, 1, 10),), randint(g, 2, 8), randint(g, 9, 12),
                                            torch.float64),
             "1-D ids, float64 W with d > V"),
        Case("embed", lambda g: _embed_args(g, (1, randint(g, 2, 6), 1), randint(g, 3, 9), randint(g, 1, 4)),
             "ids of shape (1, T, 1), d down to 1"),
        Case("embed", lambda g: _embed_args(g, (randint(g, 2, 6), 3), *[randint(g, 4, 8)] * 2),
             "square W (V == d)"),
        Case("embed", lambda g: _embed_args(g, (), randint(g, 2, 8), randint(g, 2, 6)),
             "a 0-d id"),
    ],
    "test_cosine": [
        Case("cosine_similarity_matrix", _cosine_random, "random (N, d) float32, N != d"),
        Case("cosine_similarity_matrix", _cosine_zero_rows, "two zero rows"),
        Case("cosine_similarity_matrix", _cosine_parallel,
             "float64 rows with scaled and negated copies (cosine +-1)"),
        Case("cosine_similarity_matrix", _cosine_single_row, "a single row (N = 1)"),
        Case("cosine_similarity_matrix", _cosine_one_dim, "d = 1 with a zero row"),
        Case("cosine_similarity_matrix", _cosine_large_eps,
             "eps = 0.1 with rows of norm ~1e-3"),
    ],
    "test_train_bpe": [
        Case("train_bpe", _bpe_words, "repeated random words, 6-12 merges"),
        Case("train_bpe", _bpe_unicode, "random text of a, é, 早, 🙂 and spaces"),
        Case("train_bpe", _bpe_ties,
             "a repeated word: every first choice is a tie, first occurrence != smallest pair"),
        Case("train_bpe", _bpe_overlap,
             "a run of one letter wins only when overlapping pairs are counted"),
        Case("train_bpe", _bpe_run, "'a' * n with 10 merges: stops early"),
        Case("train_bpe", _bpe_one_char, "a single character, ASCII or multi-byte"),
    ],
    "test_bpe_round_trip": [
        Case("bpe_encode", _spelled_words, "encode: merges that spell out each word"),
        Case("bpe_encode", _bpe_encode_runs, "encode: runs of 'a' (left to right, no overlap)"),
        Case("bpe_encode", _bpe_encode_random,
             "encode: multi-byte text, merges learned on another text"),
        Case("bpe_decode", _bpe_decode_random, "decode: random ids, merged and raw bytes"),
        Case("bpe_decode", _bpe_decode_bytes, "decode: multi-byte characters split into bytes"),
        Case("bpe_decode", _bpe_decode_any_byte, "decode: any byte from 0 to 255 (invalid UTF-8 becomes U+FFFD)"),
        Case("bpe_encode", _bpe_encode_no_merges, "encode: no merges at all (the UTF-8 bytes, as a list)"),
        Case("lambda text, merges: bpe_decode(bpe_encode(text, merges), merges)", _bpe_round_trip,
             "round trip of text with é, ö, 早 and 🙂"),
    ],
}
