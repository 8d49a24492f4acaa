"""Verifiers: pure functions of (draft, target logits, sampling settings, RNG).

Notation, used everywhere in outpace (as in Leviathan et al., "Fast Inference from Transformers
via Speculative Decoding", 2023, and Chen et al., "Accelerating Large Language Model Decoding with
Speculative Sampling", 2023):

- p: the *target* model's distribution at a position, after the sampling settings
  (temperature, top-k, top-p) are applied.
- q: the *draft* distribution the drafter sampled a token from, processed with the same
  settings. A drafter without one (n-gram lookups, argmax drafts) proposes a point mass: q(x) = 1
  for its token.

Terms:
- **accepted**: a draft token x kept because u < p(x) / q(x), u ~ Uniform[0, 1)
  (at temperature 0: because x is the target's argmax).
- **recovered** token: at the first rejection, the token sampled from the residual
  norm(max(p - q, 0)) (at temperature 0: the target's argmax). It replaces the rejected token.
- **bonus** token: when the walk reaches a draft node with no children (every token on the path
  accepted), one more token sampled from p at that node, for free.

Each step emits the accepted tokens and then exactly one recovered or bonus token, so the output
follows p exactly: every verifier here is lossless. Lossy verifiers live in modules whose names
say so.

target_logits rows: row 0 is the root (the last committed token, whose logits predict the first
draft level), row i + 1 belongs to draft node i.
"""

from __future__ import annotations

import torch

from outpace.sampling import SamplingConfig
from outpace.types import Draft, VerifyResult
from outpace.verify.chain import greedy_chain, speculative_chain
from outpace.verify.tree import greedy_tree, specinfer_tree


def verify(
    draft: Draft,
    target_logits: torch.Tensor,  # [num_nodes + 1, vocab]
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> VerifyResult:
    """Verify a chain or a tree with the lossless verifier that fits it."""
    if draft.is_chain:
        if sampling.greedy:
            return greedy_chain(draft.tokens, target_logits)
        return speculative_chain(draft.tokens, draft.q, target_logits, sampling, rng)
    if sampling.greedy:
        return greedy_tree(draft.tokens, draft.parents, target_logits)
    return specinfer_tree(draft.tokens, draft.parents, draft.q, target_logits, sampling, rng)


__all__ = ["greedy_chain", "greedy_tree", "specinfer_tree", "speculative_chain", "verify"]
