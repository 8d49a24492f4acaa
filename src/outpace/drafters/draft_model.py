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
        self._cache: Any = None
        self._held: list[int] = []  # tokens whose keys/values the draft cache holds
        self._committed = 0  # a prefix of _held known to be committed (needs no comparison)

    def start(self, prompt: Sequence[int]) -> None:
        self._cache = self.backend.new_cache()
        self._held = list(prompt[:-1])
        self._committed = len(self._held)
        if self._held:
            self.backend.forward(self._cache, torch.tensor(self._held), last_only=True)

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
                logits = self.backend.forward(self._cache, torch.tensor([x])).logits[-1]
                self._held.append(x)
        return Draft.chain(drafted, torch.stack(qs) if qs else None)

    def _sync(self, tokens: Sequence[int]) -> torch.Tensor:
        """Roll the draft cache back to what still matches `tokens`, feed the rest (at least
        the root), and return the logits after the root: [vocab]."""
        keep = _common_prefix(self._held, tokens, self._committed, limit=len(tokens) - 1)
        self.backend.rollback(self._cache, keep)
        feed = list(tokens[keep:])
        del self._held[keep:]
        self._held.extend(feed)
        self._committed = len(tokens)
        return self.backend.forward(self._cache, torch.tensor(feed), last_only=True).logits[-1]

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        pass


def _common_prefix(a: Sequence[int], b: Sequence[int], start: int, limit: int) -> int:
    """Length of the common prefix of a and b, capped at limit; a[:start] == b[:start] is known."""
    n = min(len(a), len(b), limit)
    for i in range(min(start, n), n):
        if a[i] != b[i]:
            return i
    return n
