"""The values that cross the seams: a draft in, a verification result out, stats per step."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch


@dataclass(frozen=True)
class Draft:
    """A chain or a tree of proposed tokens that continue the committed context.

    Nodes are in topological order. The *root* is the last committed token, which is not a node;
    a node whose parent is -1 continues the root directly.

    tokens:  [num_nodes] int64, the proposed token ids.
    parents: [num_nodes] int64, parent node index of each node (-1 = root); parents[i] < i.
    q:       [num_nodes, vocab] float32 or None. q[i] is the draft distribution that token i was
             sampled from (processed with the same SamplingConfig as the target), so siblings
             drawn from one distribution share one row value. None means the proposal is
             deterministic (n-gram matches, argmax drafts): each node is a point mass, and
             siblings must then be distinct tokens.
    grades:  [num_nodes] int64 or None. A drafter's own evidence for each node, as a small
             non-negative class (for the n-gram drafters: how many context tokens match the
             source behind the node). Nodes of one grade are expected to be accepted, given
             their parent is, at similar rates; the adaptive policy learns a rate per grade and
             verifies only the nodes that pay (see `outpace.policies`). None: no evidence.
    """

    tokens: torch.Tensor  # [num_nodes]
    parents: torch.Tensor  # [num_nodes]
    q: torch.Tensor | None = None  # [num_nodes, vocab]
    grades: torch.Tensor | None = None  # [num_nodes]

    @staticmethod
    def chain(
        tokens: torch.Tensor | list[int], q: torch.Tensor | None = None, grades: torch.Tensor | None = None
    ) -> Draft:
        """A chain: node i's parent is node i - 1, node 0 continues the root."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        return Draft(tokens, torch.arange(-1, len(tokens) - 1, dtype=torch.long), q, grades)

    @staticmethod
    def empty() -> Draft:
        return Draft.chain([])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def subtree(self, keep: list[int]) -> Draft:
        """The draft of the nodes `keep` (ascending, and holding every kept node's parent),
        renumbered in the same order; q and grades rows follow their nodes."""
        if keep == list(range(len(self))):
            return self  # the common cases (kept whole, or cut whole) skip the index arithmetic
        if not keep:
            return Draft(self.tokens[:0], self.parents[:0], None if self.q is None else self.q[:0],
                         None if self.grades is None else self.grades[:0])
        idx = torch.tensor(keep, dtype=torch.long)  # [m]
        new_id = torch.full((len(self) + 1,), -1, dtype=torch.long)  # slot 0 stands for the root
        new_id[idx + 1] = torch.arange(len(keep))
        parents = new_id[self.parents[idx] + 1]  # [m]
        if bool((parents[self.parents[idx] >= 0] < 0).any()):
            raise ValueError(f"subtree {keep} drops the parent of a kept node")
        q = None if self.q is None else self.q[idx]
        grades = None if self.grades is None else self.grades[idx]
        return Draft(self.tokens[idx], parents, q, grades)

    @cached_property
    def is_chain(self) -> bool:
        n = len(self)
        return bool(torch.equal(self.parents, torch.arange(-1, n - 1, dtype=torch.long)))


@dataclass(frozen=True)
class VerifyResult:
    """What a verifier decided for one draft.

    accepted:   indices of the accepted draft nodes, root to leaf, in order.
    next_token: the token emitted after them: the *recovered* token when a node was rejected,
                the *bonus* token when the walk ended at a node with no children.
    recovered:  True when next_token came from a rejection (the residual distribution).
    """

    accepted: list[int]
    next_token: int
    recovered: bool

    def emitted(self, draft: Draft) -> list[int]:
        """All tokens this step commits: accepted draft tokens, then next_token."""
        return [int(t) for t in draft.tokens[self.accepted].tolist()] + [self.next_token]


@dataclass
class StepStats:
    """Accounting of one decoding step (mutable: the loop fills it as the step runs)."""

    proposed: int = 0  # draft nodes proposed
    depth: int = 0  # depth of the deepest proposed node (chain length for chains)
    accepted: int = 0  # accepted draft tokens on the path
    draft_s: float = 0.0
    verify_s: float = 0.0
    other_s: float = 0.0


@dataclass
class GenerationStats:
    """Totals over one generation call. Times are wall-clock seconds."""

    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose keys/values an earlier generation left cached
    new_tokens: int = 0
    steps: int = 0
    prefill_s: float = 0.0
    draft_s: float = 0.0
    verify_s: float = 0.0
    other_s: float = 0.0
    accepted_lengths: list[int] = field(default_factory=list)  # accepted draft tokens per step
    proposed_lengths: list[int] = field(default_factory=list)  # draft nodes verified per step
    proposed_at: list[int] = field(default_factory=list)  # steps that proposed a token at depth i
    accepted_at: list[int] = field(default_factory=list)  # steps that accepted a token at depth i
    drafter_state_bytes: int | None = None  # the drafter's own tables at the end (`ReportsState`)

    def add_step(self, step: StepStats) -> None:
        self.steps += 1
        self.draft_s += step.draft_s
        self.verify_s += step.verify_s
        self.other_s += step.other_s
        self.accepted_lengths.append(step.accepted)
        self.proposed_lengths.append(step.proposed)
        _grow(self.proposed_at, step.depth)
        _grow(self.accepted_at, step.depth)
        for i in range(step.depth):
            self.proposed_at[i] += 1
        for i in range(step.accepted):
            self.accepted_at[i] += 1

    @property
    def decode_s(self) -> float:
        return self.draft_s + self.verify_s + self.other_s

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tau(self) -> float:
        """Mean tokens committed per target forward: accepted draft tokens + 1 per step."""
        return (sum(self.accepted_lengths) + self.steps) / self.steps if self.steps else 0.0

    @property
    def acceptance_by_position(self) -> list[float]:
        """P(draft token at depth i accepted | a token was proposed at depth i)."""
        return [a / p if p else 0.0 for a, p in zip(self.accepted_at, self.proposed_at)]

    @property
    def tokens_per_s(self) -> float:
        """New tokens over the whole call's wall time, prefill included."""
        return self.new_tokens / self.total_s if self.total_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "new_tokens": self.new_tokens,
            "steps": self.steps,
            "tau": round(self.tau, 4),
            "acceptance_by_position": [round(a, 4) for a in self.acceptance_by_position],
            "accepted_lengths": list(self.accepted_lengths),
            "proposed_lengths": list(self.proposed_lengths),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "time_s": {
                "prefill": round(self.prefill_s, 4),
                "draft": round(self.draft_s, 4),
                "verify": round(self.verify_s, 4),
                "other": round(self.other_s, 4),
                "total": round(self.total_s, 4),
            },
        }


def _grow(counts: list[int], n: int) -> None:
    counts.extend([0] * (n - len(counts)))
