"""STAND (Song et al., "Accelerated Test-Time Scaling with Model-Free Speculative Sampling",
2025): STochastic Adaptive N-gram Drafting.

- A logit-based n-gram module: each n-gram (n = 1..4) of the committed text maps to the target's
  next-token distribution observed after it (its top 10 probabilities), merged over occurrences
  as a running mean (the k-th observation gets weight 1/k). The distributions come from the
  verification logits of committed positions, so the module stores probabilities, not only
  tokens; prompt n-grams enter as one-hot observations (prefill logits are not exposed).
- Stochastic drafting: at a tree node, the longest matching n-gram's distribution is sampled
  with Gumbel-top-k, i.e. k distinct children sampled without replacement (greedy decoding takes
  the top k instead).
- A data-driven tree: which child ranks to expand at which depth. The paper optimizes a static
  tree offline on a calibration set; here the same statistic, the acceptance rate of each (depth,
  rank) slot, is estimated online from this drafter's own verifications, and each draft takes the
  `budget` slots with the highest estimated probability of being reached.
- Best-of-N: the n-gram module is kept across `start()` calls for the same prompt, so every
  sample of a prompt drafts from what the earlier samples taught it.

Losslessness at temperature > 0: children drawn by Gumbel-top-k are a sample without
replacement, i.e. the r-th child is drawn from q with the earlier siblings removed and
renormalized. Each node's q row is exactly that conditional distribution, so the SpecInfer tree
verifier's recursive rejection (residual after each rejected sibling) is the recursive rejection
sampling for drafts without replacement (as in Recursive Speculative Decoding, Jeon et al., 2024):
every sibling is, given what was drawn before it, a sample from its own q row.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from outpace.drafters.base import DraftContext, deep_size
from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig, probs
from outpace.types import Draft, VerifyResult

Path = tuple[int, ...]
SHARE_MODES = ("prompt", "always", "never")


@dataclass(frozen=True)
class StandConfig:
    max_n: int = 4  # longest n-gram looked up first
    min_n: int = 1  # shortest n-gram backed off to
    top_k: int = 10  # probabilities stored per n-gram
    max_children: int = 4  # child ranks a node may have
    max_depth: int = 8
    prior: float = 0.5  # prior acceptance rate of a rank-0 child (halved per rank)
    share: str = "prompt"  # keep the n-gram module across start(): same prompt | always | never

    def __post_init__(self) -> None:
        if not 1 <= self.min_n <= self.max_n:
            raise OutpaceError(f"stand needs 1 <= min_n <= max_n, got {self.min_n}, {self.max_n}")
        for name in ("top_k", "max_children", "max_depth"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise OutpaceError(f"stand {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_children > self.top_k:
            raise OutpaceError(f"stand max_children ({self.max_children}) cannot exceed top_k ({self.top_k})")
        if not 0.0 < self.prior < 1.0:
            raise OutpaceError(f"stand prior must be in (0, 1), got {self.prior!r}")
        if self.share not in SHARE_MODES:
            raise OutpaceError(f"stand share must be one of {', '.join(SHARE_MODES)}, got {self.share!r}")


def merge_mean(old: tuple[dict[int, float], int], new: dict[int, float], top_k: int) -> tuple[dict[int, float], int]:
    """Running mean of sparse distributions: (old {token: prob}, count) and a new observation
    -> the top_k of old * count/(count+1) + new * 1/(count+1), best first."""
    dist, count = old
    w_old, w_new = count / (count + 1), 1 / (count + 1)
    merged = {t: p * w_old for t, p in dist.items()}
    for t, p in new.items():
        merged[t] = merged.get(t, 0.0) + p * w_new
    return dict(sorted(merged.items(), key=lambda kv: -kv[1])[:top_k]), count + 1


class LogitNgramTable:
    """STAND's n-gram module: n-gram -> ({token: prob} of at most top_k tokens, observations)."""

    def __init__(self, max_n: int, min_n: int, top_k: int) -> None:
        self.max_n, self.min_n, self.top_k = max_n, min_n, top_k
        self.entries: dict[Path, tuple[dict[int, float], int]] = {}

    def observe(self, context: Sequence[int], dist: dict[int, float]) -> None:
        """Merge a next-token distribution {token: prob} observed after `context` into the
        entries of its trailing n-grams."""
        for n in range(1, min(self.max_n, len(context)) + 1):
            key = tuple(context[-n:])
            old = self.entries.get(key)
            self.entries[key] = merge_mean(old, dist, self.top_k) if old else (dict(dist), 1)

    def lookup(self, context: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """(tokens, probs) of the longest n-gram suffix of `context` that was observed."""
        for n in range(min(self.max_n, len(context)), self.min_n - 1, -1):
            entry = self.entries.get(tuple(context[-n:]))
            if entry is not None:
                return np.fromiter(entry[0].keys(), np.int64), np.fromiter(entry[0].values(), np.float64)
        return None


class SlotStats:
    """Acceptance of each (depth, rank) tree slot, for the data-driven tree shape.

    acc/prop: [max_depth, max_children]: times a slot's child was accepted / proposed while its
    parent was on the accepted path. Rates are shrunk towards prior * 0.5 ** rank.
    """

    def __init__(self, max_depth: int, max_children: int, prior: float, strength: float = 4.0) -> None:
        self.acc = np.zeros((max_depth, max_children))
        self.prop = np.zeros((max_depth, max_children))
        self.prior = prior * 0.5 ** np.arange(max_children)  # [max_children]
        self.strength = strength

    def rates(self) -> np.ndarray:
        return (self.acc + self.strength * self.prior) / (self.prop + self.strength)  # [D, R]

    def shape(self, budget: int) -> list[Path]:
        """The `budget` rank paths with the highest estimated probability of being reached
        (product of slot rates along the path), in breadth-first order."""
        rate = self.rates()
        depth_max, ranks = rate.shape
        heap: list[tuple[float, int, Path]] = [(-rate[0, r], 1, (r,)) for r in range(ranks)]
        heapq.heapify(heap)
        out: list[Path] = []
        while heap and len(out) < budget:
            neg, d, path = heapq.heappop(heap)
            out.append(path)
            if d < depth_max:
                for r in range(ranks):
                    heapq.heappush(heap, (neg * rate[d, r], d + 1, path + (r,)))
        return sorted(out, key=lambda p: (len(p), p))

    def record(self, paths: Sequence[Path], accepted: Sequence[int]) -> None:
        """paths: the slot of each proposed node; accepted: the accepted node indices."""
        reached = {()} | {paths[i] for i in accepted}
        taken = {paths[i] for i in accepted}
        for path in paths:
            if path[:-1] in reached:
                d, r = len(path) - 1, path[-1]
                self.prop[d, r] += 1
                self.acc[d, r] += path in taken


def gumbel_top(logp: np.ndarray, m: int, rng: torch.Generator | None) -> np.ndarray:
    """Indices of m draws without replacement from softmax(logp) (Gumbel-top-k), or the m
    largest when rng is None (greedy)."""
    if rng is None:
        return np.argsort(-logp, kind="stable")[:m]
    u = torch.rand(logp.shape[0], generator=rng, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12).numpy()
    return np.argsort(-(logp - np.log(-np.log(u))), kind="stable")[:m]


def without_replacement(p: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
    """The distribution each of the draws `order` came from: p with the earlier draws removed,
    renormalized. p: [k] probabilities (normalized); returns one [k] row per draw."""
    rows, left = [], p.copy()
    for i in order:
        rows.append(left / left.sum())
        left[i] = 0.0
    return rows


class StandDrafter:
    """STAND: logit n-gram module + Gumbel-top-k trees, lossless at any temperature."""

    name = "stand"
    makes_trees = True

    def __init__(self, vocab_size: int, config: StandConfig = StandConfig()) -> None:
        self.vocab, self.config = vocab_size, config
        self.table = LogitNgramTable(config.max_n, config.min_n, config.top_k)
        self.stats = SlotStats(config.max_depth, config.max_children, config.prior)
        self._prompt: int | None = None
        self._tail: tuple[int, ...] = ()
        self._paths: list[Path] = []
        self._sampling = SamplingConfig(temperature=1.0)

    def start(self, prompt: Sequence[int]) -> None:
        cfg = self.config
        key = hash(tuple(prompt))
        if cfg.share == "never" or (cfg.share == "prompt" and key != self._prompt):
            self.table = LogitNgramTable(cfg.max_n, cfg.min_n, cfg.top_k)
        if cfg.share == "never" or key != self._prompt:
            toks = [int(t) for t in prompt]
            for i in range(len(toks) - 1):  # prompt n-grams as one-hot observations
                self.table.observe(toks[max(0, i + 1 - cfg.max_n) : i + 1], {toks[i + 1]: 1.0})
        self._prompt = key

    def state_bytes(self) -> int:
        return deep_size(self.table.entries, self.stats.acc, self.stats.prop)

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        self._tail = tuple(int(t) for t in ctx.tokens[-self.config.max_n :])
        rng = None if ctx.sampling.greedy else ctx.rng
        # The module stores the distribution the target samples from (at temperature 0, the
        # temperature-1 softmax, whose ranking is what greedy drafting needs).
        self._sampling = SamplingConfig(temperature=1.0) if rng is None else ctx.sampling
        tokens, parents, rows, paths = self._grow(self.stats.shape(ctx.budget), rng)
        self._paths = paths
        if not tokens:
            return Draft.empty()
        q = None
        if rng is not None:
            q = torch.zeros(len(tokens), self.vocab)  # [num_nodes, vocab]
            for i, (toks, row) in enumerate(rows):
                q[i, torch.from_numpy(toks)] = torch.from_numpy(row).float()
        return Draft(torch.tensor(tokens), torch.tensor(parents, dtype=torch.long), q)

    def _grow(
        self, shape: list[Path], rng: torch.Generator | None
    ) -> tuple[list[int], list[int], list[tuple[np.ndarray, np.ndarray]], list[Path]]:
        """Fill the slots of `shape` (breadth-first rank paths) with sampled children. Returns
        tokens, parents, the (support tokens, q over them) each node was drawn from, and the
        slot of each node."""
        node_of: dict[Path, int] = {}
        drawn: dict[Path, tuple[np.ndarray, np.ndarray, list[np.ndarray]]] = {}
        wanted: dict[Path, int] = {}
        for path in shape:
            wanted[path[:-1]] = max(wanted.get(path[:-1], 0), path[-1] + 1)
        tokens: list[int] = []
        parents: list[int] = []
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        paths: list[Path] = []
        context: dict[Path, tuple[int, ...]] = {(): self._tail}
        for path in shape:
            parent = path[:-1]
            if parent not in context:
                continue
            if parent not in drawn:
                found = self.table.lookup(context[parent])
                if found is None:
                    continue
                toks, p = found
                p = p / p.sum()
                m = min(wanted[parent], int((p > 0).sum()))  # draw only tokens of positive mass
                order = gumbel_top(np.log(np.maximum(p, 1e-300)), m, rng)
                drawn[parent] = (toks, order, without_replacement(p, order) if rng is not None else [])
            toks, order, cond = drawn[parent]
            r = path[-1]
            if r >= order.shape[0]:
                continue
            tok = int(toks[order[r]])
            node_of[path] = len(tokens)
            tokens.append(tok)
            parents.append(node_of[parent] if parent else -1)
            rows.append((toks, cond[r]) if cond else (toks, np.zeros(0)))
            paths.append(path)
            context[path] = (context[parent] + (tok,))[-self.config.max_n :]
        return tokens, parents, rows, paths

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        """Learn the target's distributions at the committed positions (root and accepted nodes)
        and the acceptance of each tree slot. target_logits: [len(draft) + 1, vocab]."""
        self.stats.record(self._paths, result.accepted)
        rows = [0] + [i + 1 for i in result.accepted]
        dist = probs(target_logits[rows], self._sampling)  # [len(rows), vocab]
        top = torch.topk(dist, min(self.config.top_k, dist.shape[-1]), dim=-1)
        context = list(self._tail)
        for j, (toks, ps) in enumerate(zip(top.indices.tolist(), top.values.tolist())):
            if j:
                context.append(int(draft.tokens[rows[j] - 1]))
            # top-p / top-k leave zeros: not worth storing
            self.table.observe(context[-self.config.max_n :], {t: p for t, p in zip(toks, ps) if p > 0})
