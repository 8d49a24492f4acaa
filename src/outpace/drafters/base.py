"""The drafter seam. Drafters never see the verifier; they see committed tokens and settings."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from outpace.sampling import SamplingConfig
from outpace.types import Draft, VerifyResult


@dataclass(frozen=True)
class DraftContext:
    """What a drafter may use to propose the next draft.

    tokens:   every committed token, prompt included; tokens[-1] is the root of the draft.
    budget:   the most draft tokens the loop will verify this step (chain length, or tree nodes).
    sampling: the settings the target is sampled with; a drafter that samples applies the same
              ones to its q (see `outpace.sampling.probs`).
    rng:      the generation's generator; drafters draw from it so seeded runs repeat exactly.
    """

    tokens: Sequence[int]
    budget: int
    sampling: SamplingConfig
    rng: torch.Generator


@runtime_checkable
class Drafter(Protocol):
    """Proposes chains or trees of tokens; learns from what the target accepted."""

    name: str
    #: True when propose() may return trees (the target backend must then support trees).
    makes_trees: bool

    def start(self, prompt: Sequence[int]) -> None:
        """Begin a new sequence (prefill any state from the prompt)."""
        ...

    def propose(self, ctx: DraftContext) -> Draft:
        """A chain or a tree of at most ctx.budget tokens continuing ctx.tokens (may be empty)."""
        ...

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        """Called after each verification; target_logits: [len(draft) + 1, vocab]."""
        ...


@runtime_checkable
class ChoosesVerifier(Protocol):
    """A drafter whose drafts need one particular lossless verifier, for example drafts sampled
    without replacement (Recursive SD, SpecTr). Drafters without this use `outpace.verify.verify`."""

    def verifier(
        self, draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
    ) -> VerifyResult:
        """Verify `draft`; target_logits: [len(draft) + 1, vocab] (row 0 is the root)."""
        ...


@runtime_checkable
class GradesNodes(Protocol):
    """A deterministic drafter (q None) whose drafts carry `Draft.grades`, integers in
    0..max_grade that count the evidence behind a node (for the n-gram drafters, the context
    tokens its source agreed with; more is likelier, which the policy's prior assumes). With a
    cost-aware budget the decoder then asks it for the whole budget every step and verifies
    only the nodes whose grades have been paying (`outpace.policies`)."""

    max_grade: int


@runtime_checkable
class ReportsState(Protocol):
    """A drafter that can say how much memory its own data structures hold (tables, indexes,
    matrices; not model weights or KV caches), so the benchmark can show whether it grows."""

    def state_bytes(self) -> int:
        """Approximate bytes held now (see `deep_size`)."""
        ...


def deep_size(*objs: object) -> int:
    """Approximate bytes of nested containers: `sys.getsizeof` of every dict, list, tuple, set
    and scalar reached, `nbytes` of numpy arrays and tensors (shared objects counted once)."""
    seen: set[int] = set()
    total = 0
    stack = list(objs)
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            total += o.nbytes
        elif isinstance(o, torch.Tensor):
            total += o.numel() * o.element_size()
        else:
            total += sys.getsizeof(o)
            if isinstance(o, dict):
                stack.extend(o.keys())
                stack.extend(o.values())
            elif isinstance(o, (list, tuple, set, frozenset)):
                stack.extend(o)
    return total
