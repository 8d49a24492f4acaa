"""Prompt lookup decoding (Saxena, 2023, "Prompt Lookup Decoding"): propose the tokens that
followed the most recent earlier occurrence of the context's last n-gram. With branches > 1,
the continuations of several matches are merged into a trie and verified as one tree.

One member of the model-free family: the n-gram lookup is the shared incremental
`drafters.ngram.ContextIndex` (each step indexes only the newly committed tokens), the tree is
`tree.build_trie`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from outpace.drafters.base import DraftContext
from outpace.drafters.ngram import (
    MAX_GRADE,
    ContextIndex,
    find_continuations,
    match_grades,
)
from outpace.errors import OutpaceError
from outpace.tree import build_trie, chain_parents
from outpace.types import Draft, VerifyResult

__all__ = ["PromptLookupConfig", "PromptLookupDrafter", "find_continuations"]


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


class PromptLookupDrafter:
    """Model-free n-gram drafter over the context itself. Deterministic: q is None."""

    name = "prompt-lookup"
    max_grade = MAX_GRADE  # drafts carry grades (see `GradesNodes`)

    def __init__(self, config: PromptLookupConfig = PromptLookupConfig()) -> None:
        self.config = config
        self.makes_trees = config.branches > 1
        self.index = ContextIndex(config.max_ngram)

    def start(self, prompt: Sequence[int]) -> None:
        self.index.reset(prompt)

    def state_bytes(self) -> int:
        return self.index.nbytes()

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        cfg = self.config
        per_branch = ctx.budget if cfg.branches == 1 else max(1, ctx.budget // cfg.branches)
        self.index.sync(ctx.tokens)
        span, conts = self.index.lookup(cfg.max_ngram, cfg.min_ngram, per_branch, cfg.branches)
        if len(conts) <= 1:
            tokens = conts[0] if conts else []
            return Draft.chain(tokens, None, match_grades(span, chain_parents(len(tokens))))
        tokens, parents = build_trie(conts)
        tree_parents = torch.tensor(parents)
        return Draft(torch.tensor(tokens), tree_parents, None, match_grades(span, tree_parents))

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        pass
