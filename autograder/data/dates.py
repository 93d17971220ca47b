"""The date-normalisation task of Chapters 4, 5 and 9: many surface forms → ISO ``YYYY-MM-DD``.

Every pair is generated from a seeded :class:`random.Random`, so a split is a seed and nothing is
downloaded or stored. The inputs range from 6 characters (``1/1/50``) to over 60 (``the
twenty-first of November, two thousand twenty-six``) while every output has 10 characters, which
is what makes the fixed-size context of a plain encoder–decoder (Chapter 4) visibly run out and
attention (Chapter 5) pay off.

Conventions, so that every input has exactly one answer:

* dates lie in 1950-01-01 … 2049-12-31; two-digit years ``yy`` mean 20yy when yy < 50, else 19yy;
* numeric forms are always day first (``21/11/26`` is 21 November), never US month-first;
* weekdays, when present, are the true weekday of the date.

Characters are the tokens. Id 0 is ``<pad>``, 1 is ``<bos>``, 2 is ``<eos>`` in both vocabularies,
so ``nn.Embedding(..., padding_idx=PAD)`` and ``ignore_index=PAD`` work the same on both sides.

    >>> from autograder.data import dates
    >>> dates.generate(2, seed=0)                      # doctest: +SKIP
    [('Mon, 3rd of March 1997', '1997-03-03'), ('14.06.2031', '2031-06-14')]
    >>> src, src_len, tgt = dates.tensors(dates.generate(64, seed=1))
"""

from __future__ import annotations

import datetime as _dt
import random
from typing import Callable

import torch
from torch.nn.utils.rnn import pad_sequence

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")

_FIRST, _LAST = _dt.date(1950, 1, 1), _dt.date(2049, 12, 31)
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_ONES = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                  "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def _words(n: int) -> str:
    """0 < n < 100 in English words: 21 → 'twenty-one'."""
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _ordinal_words(n: int) -> str:
    """21 → 'twenty-first', 12 → 'twelfth', 30 → 'thirtieth'."""
    head, _, last = _words(n).rpartition("-")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}-{last}" if head else last


def _ordinal(n: int) -> str:
    """21 → '21st', 12 → '12th'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _year_words(y: int) -> str:
    """1997 → 'nineteen ninety-seven', 2006 → 'two thousand six', 2026 → 'two thousand twenty-six'."""
    if y >= 2000:
        return "two thousand" + (f" {_words(y - 2000)}" if y > 2000 else "")
    return f"{_words(y // 100)} {_words(y % 100)}" if y % 100 else f"{_words(y // 100)} hundred"


# Each format turns a date into one surface form; names let the book break accuracy down by format.
FORMATS: dict[str, Callable[[_dt.date], str]] = {
    "dd.mm.yy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}",
    "d/m/yy": lambda d: f"{d.day}/{d.month}/{d.year % 100:02d}",
    "dd/mm/yyyy": lambda d: f"{d.day:02d}/{d.month:02d}/{d.year}",
    "yyyy.mm.dd": lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}",
    "d Mon yyyy": lambda d: f"{d.day} {_MONTHS[d.month - 1][:3]} {d.year}",
    "Month d, yyyy": lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
    "dth Month yyyy": lambda d: f"{_ordinal(d.day)} {_MONTHS[d.month - 1]} {d.year}",
    "Mon d 'yy": lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day} '{d.year % 100:02d}",
    "WEEKDAY d MONTH yyyy": lambda d: f"{_WEEKDAYS[d.weekday()].upper()} {d.day} "
                                      f"{_MONTHS[d.month - 1].upper()} {d.year}",
    "Wkd, dth of Month yyyy": lambda d: f"{_WEEKDAYS[d.weekday()][:3]}, {_ordinal(d.day)} of "
                                        f"{_MONTHS[d.month - 1]} {d.year}",
    "Weekday, Month d, yyyy": lambda d: f"{_WEEKDAYS[d.weekday()]}, {_MONTHS[d.month - 1]} "
                                        f"{d.day}, {d.year}",
    "the ordinal of Month, year in words": lambda d: f"the {_ordinal_words(d.day)} of "
                                                     f"{_MONTHS[d.month - 1]}, {_year_words(d.year)}",
}

SOURCE_VOCAB: list[str] = [*SPECIALS, *sorted(
    {ch for f in FORMATS.values() for day in range(1, 366 * 4, 7)
     for ch in f(_dt.date(1996, 1, 1) + _dt.timedelta(days=day))}
    | set("0123456789") | {ch for m in _MONTHS for ch in m + m.upper()}
    | {ch for w in _WEEKDAYS for ch in w + w.upper()}
    | {ch for n in range(1, 100) for ch in _ordinal_words(n) + _words(n)})]
TARGET_VOCAB: list[str] = [*SPECIALS, *"-0123456789"]


def iso(date: _dt.date) -> str:
    return date.isoformat()


def generate(n: int, seed: int = 0, formats: list[str] | None = None) -> list[tuple[str, str]]:
    """``n`` (surface form, ISO date) pairs: uniform random dates, each in a uniform random format."""
    rng = random.Random(seed)
    names = list(FORMATS) if formats is None else formats
    span = (_LAST - _FIRST).days
    pairs = []
    for _ in range(n):
        date = _FIRST + _dt.timedelta(days=rng.randrange(span + 1))
        pairs.append((FORMATS[rng.choice(names)](date), iso(date)))
    return pairs


def splits(n_train: int = 20_000, n_valid: int = 2_000, n_test: int = 2_000
           ) -> tuple[list[tuple[str, str]], ...]:
    """The course's fixed train/validation/test pairs (seeds 0, 1, 2)."""
    return generate(n_train, seed=0), generate(n_valid, seed=1), generate(n_test, seed=2)


def ids(text: str, vocab: list[str]) -> list[int]:
    """Character ids of ``text`` in ``vocab`` (every character of the task is in its vocabulary)."""
    index = {ch: i for i, ch in enumerate(vocab)}
    return [index[ch] for ch in text]


def text(token_ids: list[int] | torch.Tensor, vocab: list[str]) -> str:
    """The characters of ``token_ids`` up to the first ``<eos>``, specials dropped."""
    out = []
    for i in (token_ids.tolist() if isinstance(token_ids, torch.Tensor) else token_ids):
        if i == EOS:
            break
        if i >= len(SPECIALS):
            out.append(vocab[i])
    return "".join(out)


def tensors(pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch as tensors: source ids (B, S) padded with PAD, source lengths (B,), and target ids
    (B, T) as ``<bos> y1 … y10 <eos>`` (so T = 12 for every pair)."""
    src = [torch.tensor(ids(s, SOURCE_VOCAB)) for s, _ in pairs]
    tgt = [torch.tensor([BOS, *ids(t, TARGET_VOCAB), EOS]) for _, t in pairs]
    lengths = torch.tensor([len(s) for s in src])
    return pad_sequence(src, batch_first=True, padding_value=PAD), lengths, torch.stack(tgt)
