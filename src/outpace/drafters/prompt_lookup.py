"""Prompt lookup decoding (Saxena, 2023, "Prompt Lookup Decoding"): propose the tokens that
followed the most recent earlier occurrence of the context's last n-gram. With branches > 1,
the continuations of several matches are merged into a trie and verified as one tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from outpace.drafters.base import DraftContext
from outpace.errors import OutpaceError
from outpace.tree import build_trie
from outpace.types import Draft, VerifyResult


@dataclass(frozen=True)
class PromptLookupConfig:
    max_ngram: int = 3
    min_ngram: int = 1
    branches: int = 1  # distinct continuations merged into a tree; 1 gives a chain

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise OutpaceError(
                f"prompt lookup needs 1 <= min_ngram <= max_ngram, got {self.min_ngram}, {self.max_ngram}"
            )
        if self.branches < 1:
            raise OutpaceError(f"prompt lookup branches must be >= 1, got {self.branches}")


def find_continuations(
    tokens: np.ndarray, max_ngram: int, min_ngram: int, length: int, limit: int
) -> list[list[int]]:
    """Continuations (up to `length` tokens) after earlier occurrences of the trailing n-gram,
    most recent occurrence first, trying the longest n first; at most `limit` distinct ones."""
    n_tok = tokens.shape[0]
    found: list[list[int]] = []
    for n in range(min(max_ngram, n_tok - 1), min_ngram - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(tokens[: n_tok - 1], n)  # [n_tok-n, n]
        starts = np.flatnonzero((windows == tokens[n_tok - n :]).all(axis=1))[::-1]
        for s in starts.tolist():
            cont = tokens[s + n : s + n + length].tolist()
            if cont and cont not in found:
                found.append(cont)
                if len(found) == limit:
                    return found
        if found:
            return found
    return found


class PromptLookupDrafter:
    """Model-free n-gram drafter over the context itself. Deterministic: q is None."""

    name = "prompt-lookup"

    def __init__(self, config: PromptLookupConfig = PromptLookupConfig()) -> None:
        self.config = config
        self.makes_trees = config.branches > 1

    def start(self, prompt: Sequence[int]) -> None:
        pass

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        cfg = self.config
        per_branch = ctx.budget if cfg.branches == 1 else max(1, ctx.budget // cfg.branches)
        conts = find_continuations(
            np.asarray(ctx.tokens, dtype=np.int64), cfg.max_ngram, cfg.min_ngram, per_branch, cfg.branches
        )
        if len(conts) <= 1:
            return Draft.chain(conts[0] if conts else [])
        tokens, parents = build_trie(conts)
        return Draft(torch.tensor(tokens), torch.tensor(parents))

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        pass
