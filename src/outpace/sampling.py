"""Sampling settings and the one function that turns logits into a distribution.

Both the target distribution p and the draft distribution q go through `probs` with the same
`SamplingConfig`, so speculative sampling stays exact for the processed target distribution
(temperature, then top-k, then top-p), as in Leviathan et al. (2023), section 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from outpace.errors import OutpaceError


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen. temperature 0 means greedy (argmax); top_k 0 means no top-k cut."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature):
            raise OutpaceError(f"temperature must be a finite number, got {self.temperature!r}")
        if self.temperature < 0:
            raise OutpaceError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise OutpaceError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise OutpaceError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise OutpaceError(f"seed must be an integer or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def make_rng(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with `seed`, or from OS entropy when seed is None."""
    rng = torch.Generator()
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(seed)
    return rng


def probs(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Processed distribution over the vocabulary, float32.

    logits: [..., vocab]. Returns [..., vocab]. Greedy settings give a one-hot of the argmax.
    """
    logits = logits.float()
    if cfg.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / cfg.temperature
    if cfg.top_k and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_p = sorted_logits.softmax(-1)
        # Drop a token when the mass strictly before it already reaches top_p; keeps the top-1.
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= cfg.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(-1)


def sample(p: torch.Tensor, rng: torch.Generator) -> int:
    """One token id drawn from distribution p: [vocab] (need not be normalized).

    Inverse-CDF sampling with one uniform draw: several times faster than torch.multinomial on
    small vocabularies, and never returns a token of probability 0.
    """
    cdf = p.cumsum(0)  # [vocab]
    u = torch.rand(1, generator=rng) * cdf[-1]
    i = int(torch.searchsorted(cdf, u, right=True))
    return i if i < p.shape[0] else int(p.nonzero()[-1])
