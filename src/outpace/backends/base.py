"""The backend seam: what the decoding loop and the drafters may ask of a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the loop checks these up front, never by trying.

    trees:         forward() accepts a token tree (a parents vector) with a tree attention mask.
    hidden_states: forward() can return the hidden states of chosen layers.
    rollback:      rollback() and keep() can shorten or compact the KV cache.
    """

    trees: bool
    hidden_states: bool
    rollback: bool


@dataclass(frozen=True)
class ForwardOutput:
    logits: torch.Tensor  # [num_tokens, vocab] float32
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [num_tokens, hidden]


@runtime_checkable
class Backend(Protocol):
    """A model plus the operations on its KV cache. The cache is passed in, never hidden inside,
    so several caches (requests, drafters) can share one backend."""

    name: str
    capabilities: Capabilities
    vocab_size: int  # rows of the logits (may exceed the tokenizer's size)
    max_context: int  # positions the model supports

    def new_cache(self) -> Any:
        """An empty KV cache for this model."""
        ...

    def cache_len(self, cache: Any) -> int:
        """Number of tokens whose keys and values the cache holds."""
        ...

    def forward(
        self,
        cache: Any,
        tokens: torch.Tensor,  # [n] int64
        parents: torch.Tensor | None = None,  # [n] int64, -1 = attached to the cache's last token
        hidden_layers: Sequence[int] = (),
        last_only: bool = False,
    ) -> ForwardOutput:
        """Run n new tokens after the cache and append them to it.

        parents None: the tokens continue the cache as a chain (causal attention).
        parents given (needs capabilities.trees): the tokens form a tree; token i attends to the
        whole cache and to its ancestors, at position cache_len + depth(i) - 1.
        Returns logits for every new token (only the last one with last_only, which saves a
        [n, vocab] matrix on long prefills), and hidden states of `hidden_layers` if asked.
        """
        ...

    def rollback(self, cache: Any, length: int) -> None:
        """Shorten the cache to its first `length` tokens (needs capabilities.rollback)."""
        ...

    def keep(self, cache: Any, start: int, rows: Sequence[int]) -> None:
        """Keep the cache up to `start`, then only the entries `start + r` for r in rows, in
        order, and drop the rest: compaction to a tree's accepted path (needs rollback)."""
        ...
