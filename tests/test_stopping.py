"""Incremental detokenization: the streamed pieces add up to the full decode, whatever the
chunking, including multi-byte characters split across tokens, and stop strings cut it."""

from __future__ import annotations

import random

import pytest

from outpace.stopping import TextStream

TEXT = "def f(x):\n    return x * 2  # doubles\nCafé crème, 猫が寝ている 🐈‍⬛ ok.\n\n  end"


def _chunks(ids: list[int], rng: random.Random) -> list[list[int]]:
    out, i = [], 0
    while i < len(ids):
        n = rng.randint(1, 5)
        out.append(ids[i : i + n])
        i += n
    return out


def _stream(tok, ids: list[int], seed: int, stop: tuple[str, ...] = ()) -> tuple[str, TextStream]:
    s = TextStream(tok, stop)
    pieces = [s.push(c) for c in _chunks(ids, random.Random(seed))]
    pieces.append(s.flush())
    assert all("\ufffd" not in p for p in pieces[:-1])  # no half characters are ever emitted
    return "".join(pieces), s


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2.tokenizer


@pytest.mark.parametrize("seed", range(5))
def test_pieces_add_up_to_the_full_decode(tokenizer, seed):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    text, _ = _stream(tokenizer, ids, seed)
    assert text == tokenizer.decode(ids, skip_special_tokens=True)


def test_stop_string_split_across_tokens_cuts_the_text(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    for seed in range(3):
        text, s = _stream(tokenizer, ids, seed, stop=("crème",))
        assert s.stopped and text == TEXT[: TEXT.index("crème")]


def test_each_push_decodes_only_a_window(tokenizer):
    """The decoded span stays short however long the output grows (no quadratic re-decoding)."""
    seen: list[int] = []

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            seen.append(len(ids))
            return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = tokenizer.encode(TEXT * 8, add_special_tokens=False)
    s = TextStream(Counting())
    for t in ids:
        s.push([t])
    assert max(seen) <= 8 < len(ids)
