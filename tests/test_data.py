"""The date task: deterministic, every pair correct, lengths spread wide, vocabularies complete."""

from __future__ import annotations

import datetime as dt

from autograder.data import dates


def test_pairs_are_deterministic_and_correct():
    pairs = dates.generate(3000, seed=7)
    assert pairs == dates.generate(3000, seed=7) != dates.generate(3000, seed=8)
    for source, target in pairs:
        day = dt.date.fromisoformat(target)
        assert dt.date(1950, 1, 1) <= day <= dt.date(2049, 12, 31)
        assert source in {f(day) for f in dates.FORMATS.values()}, (source, target)


def test_every_format_appears_and_inputs_vary_widely_in_length():
    pairs = dates.generate(3000, seed=0)
    lengths = [len(s) for s, _ in pairs]
    assert min(lengths) <= 8 and max(lengths) >= 50
    for name, fmt in dates.FORMATS.items():
        assert any(s == fmt(dt.date.fromisoformat(t)) for s, t in pairs), name


def test_weekdays_and_words_are_right():
    day = dt.date(2026, 11, 21)  # a Saturday
    assert dates.FORMATS["Wkd, dth of Month yyyy"](day) == "Sat, 21st of November 2026"
    assert dates.FORMATS["the ordinal of Month, year in words"](day) == (
        "the twenty-first of November, two thousand twenty-six")
    assert dates.FORMATS["the ordinal of Month, year in words"](dt.date(1963, 2, 12)) == (
        "the twelfth of February, nineteen sixty-three")
    assert dates.FORMATS["d/m/yy"](dt.date(2049, 3, 4)) == "4/3/49"


def test_tensors_round_trip():
    pairs = dates.generate(50, seed=3)
    src, lengths, tgt = dates.tensors(pairs)
    assert src.shape == (50, int(lengths.max())) and tgt.shape == (50, 12)
    assert (tgt[:, 0] == dates.BOS).all() and (tgt[:, -1] == dates.EOS).all()
    for b, (source, target) in enumerate(pairs):
        assert dates.text(src[b, : lengths[b]], dates.SOURCE_VOCAB) == source
        assert (src[b, lengths[b]:] == dates.PAD).all()
        assert dates.text(tgt[b, 1:], dates.TARGET_VOCAB) == target
