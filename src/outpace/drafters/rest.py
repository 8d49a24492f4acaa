"""REST (He, Zhong, Cai, Lee and He, "REST: Retrieval-Based Speculative Decoding", NAACL 2024).

Each step, the longest suffix of the context (16 tokens down to 2) that occurs in a datastore
is looked up in its suffix array; the continuations that followed its occurrences are merged into
a trie, each node weighted by how many continuations pass through it, and the `budget` most
frequent nodes are verified as one tree (point masses with distinct siblings, q None).

Retrieval sources (`Retriever`): a datastore file (`outpace datastore build`), or, when none is
given, the context itself (prompt and output so far), which makes REST a frequency-weighted
tree version of prompt lookup. REST proper samples the first k occurrences in suffix-array order;
here an evenly spaced sample of the block, which keeps each continuation's share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from outpace.datastore import Datastore
from outpace.drafters.base import DraftContext
from outpace.drafters.ngram import MAX_GRADE, ContextIndex, match_grades
from outpace.drafters.trie import prefix_trie, select_top, trie_draft
from outpace.errors import OutpaceError
from outpace.types import Draft, VerifyResult


@dataclass(frozen=True)
class RestConfig:
    max_span: int = 16  # longest context suffix looked up
    min_span: int = 2  # shortest (REST's spans are 16 down to 2)
    length: int = 10  # tokens retrieved per continuation
    limit: int = 1024  # continuations retrieved per step at most

    def __post_init__(self) -> None:
        if not 1 <= self.min_span <= self.max_span:
            raise OutpaceError(f"rest needs 1 <= min_span <= max_span, got {self.min_span}, {self.max_span}")
        if self.length < 1 or self.limit < 1:
            raise OutpaceError(f"rest length and limit must be >= 1, got {self.length}, {self.limit}")


class Retriever(Protocol):
    """Continuations of the longest context suffix that a source knows."""

    name: str

    def start(self, prompt: Sequence[int]) -> None: ...

    def retrieve(self, tokens: Sequence[int], cfg: RestConfig) -> tuple[np.ndarray, int]:
        """([k, cfg.length] int64 continuations, -1 padded where they end; the length of the
        context suffix they continue, 0 when nothing matched)."""
        ...

    def nbytes(self) -> int:
        """Approximate memory of the source's index (a datastore's arrays, or the context's)."""
        ...


class DatastoreRetriever:
    """Retrieval from a suffix-array datastore; only the last max_span tokens are read."""

    name = "datastore"

    def __init__(self, store: Datastore) -> None:
        self.store = store

    def start(self, prompt: Sequence[int]) -> None:
        pass

    def nbytes(self) -> int:
        return int(self.store.tokens.nbytes + self.store.suffixes.nbytes)

    def retrieve(self, tokens: Sequence[int], cfg: RestConfig) -> tuple[np.ndarray, int]:
        tail = [int(t) for t in tokens[-cfg.max_span :]]
        return self.store.retrieve(tail, cfg.max_span, cfg.min_span, cfg.length, cfg.limit)


class ContextRetriever:
    """Retrieval from the context itself (prompt + output), through an incremental n-gram index."""

    name = "context"

    def __init__(self, max_span: int) -> None:
        self.index = ContextIndex(max_span)

    def start(self, prompt: Sequence[int]) -> None:
        self.index.reset(prompt)

    def nbytes(self) -> int:
        return self.index.nbytes()

    def retrieve(self, tokens: Sequence[int], cfg: RestConfig) -> tuple[np.ndarray, int]:
        self.index.sync(tokens)
        return self.index.retrieve(min(cfg.max_span, self.index.max_n), cfg.min_span, cfg.length, cfg.limit)


def retrieval_trie(rows: np.ndarray, budget: int, span: int) -> Draft:
    """REST's draft: the `budget` most frequent prefixes of the retrieved rows, as a tree, graded
    by the match behind each node (`match_grades`; rows continue a suffix of `span` tokens)."""
    trie = prefix_trie(rows)
    draft = trie_draft(select_top(trie, trie.weight, budget))
    return Draft(draft.tokens, draft.parents, None, match_grades(span, draft.parents))


class RestDrafter:
    """REST: a frequency-weighted trie of retrieved continuations. Deterministic (q None)."""

    name = "rest"
    makes_trees = True
    max_grade = MAX_GRADE  # drafts carry grades (see `GradesNodes`)

    def __init__(self, retriever: Retriever, config: RestConfig = RestConfig()) -> None:
        self.retriever, self.config = retriever, config

    def start(self, prompt: Sequence[int]) -> None:
        self.retriever.start(prompt)

    def state_bytes(self) -> int:
        return self.retriever.nbytes()

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        rows, span = self.retriever.retrieve(ctx.tokens, self.config)  # rows: [k, length]
        return retrieval_trie(rows, ctx.budget, span) if rows.shape[0] else Draft.empty()

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        pass
