"""Speculative sampling with a separate draft model (SpS; Leviathan et al. 2023, Chen et al.
2023): a smaller model with the target's tokenizer proposes a chain of k tokens, one forward
each, sampled from its own processed distribution q."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from outpace.backends.base import Backend
from outpace.drafters.base import DraftContext
from outpace.errors import OutpaceError
from outpace.held_cache import HeldCache
from outpace.sampling import probs, sample
from outpace.types import Draft, VerifyResult


def check_same_tokenizer(target_tok: Any, draft_tok: Any, target: str, draft: str) -> None:
    """Raise OutpaceError unless both tokenizers map every token string to the same id."""
    tv, dv = target_tok.get_vocab(), draft_tok.get_vocab()
    if tv != dv:
        common = sum(1 for t, i in dv.items() if tv.get(t) == i)
        raise OutpaceError(
            f"draft model {draft} and target {target} have different tokenizers "
            f"({len(dv)} vs {len(tv)} tokens, {common} identical): the draft-model drafter needs "
            "the same tokenizer; use a draft model from the target's family, or prompt-lookup"
        )


class DraftModelDrafter:
    """Drafts a chain with a small model. Keeps its own KV cache in step with the committed
    tokens: after each verification it reuses the longest prefix it already holds."""

    name = "draft-model"
    makes_trees = False

    def __init__(self, backend: Backend) -> None:
        if not backend.capabilities.rollback:
            raise OutpaceError(f"draft model backend {backend.name} cannot roll back its cache")
        self.backend = backend
        self._held = HeldCache(backend)
        self._committed = 0  # a prefix of the held tokens known to be committed (needs no comparison)

    def start(self, prompt: Sequence[int]) -> None:
        self._held.drop()  # each generation pays its own draft prefill
        self._held.hold(prompt[:-1])
        self._committed = len(prompt) - 1

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        logits = self._sync(ctx.tokens)  # [vocab] after the root
        drafted: list[int] = []
        qs: list[torch.Tensor] = []
        for i in range(ctx.budget):
            if ctx.sampling.greedy:
                x = int(logits.argmax())
            else:
                q = probs(logits, ctx.sampling)  # [vocab]
                x = sample(q, ctx.rng)
                qs.append(q)
            drafted.append(x)
            if i + 1 < ctx.budget:
                logits = self._held.extend([x])
        return Draft.chain(drafted, torch.stack(qs) if qs else None)

    def _sync(self, tokens: Sequence[int]) -> torch.Tensor:
        """Roll the draft cache back to what still matches `tokens`, feed the rest (at least
        the root), and return the logits after the root: [vocab]."""
        logits = self._held.hold(tokens, known=self._committed, min_new=1)
        assert logits is not None  # min_new=1: the root is always forwarded
        self._committed = len(tokens)
        return logits

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        pass

