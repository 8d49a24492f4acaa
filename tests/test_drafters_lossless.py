"""Statistical losslessness of the model-free drafters at temperature > 0.

1. The verifier level: children drawn by Gumbel-top-k (without replacement) with STAND's q rows
   (each the conditional distribution given the earlier siblings) through the SpecInfer tree
   verifier give exactly the target distribution; the naive rows (the unconditional q for every
   sibling) do not, which shows the test can see the difference.
2. The whole engine: every drafter decodes through `Decoder` at temperature > 0 and the joint
   distribution of the first two generated tokens is compared with the exact one. The target is
   `TableLM`, a Backend whose next-token logits are a fixed random function of the last two
   tokens (trees, rollback and compaction included): it makes thousands of generations cheap, and
   the drafters, verifier and loop do not care what computes the logits. One run uses the tiny
   transformer of the other end-to-end tests instead, for STAND.

Each test has false-failure rate ALPHA = 1e-4 (see tests/stats.py); runs are seeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_model
from stats import ALPHA, chi_square_pvalue

from outpace.backends.base import Capabilities, ForwardOutput
from outpace.datastore import Datastore
from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.aded import AdedConfig, AdedDrafter
from outpace.drafters.rasd import RasdDrafter
from outpace.drafters.recycling import RecyclingConfig, RecyclingDrafter
from outpace.drafters.rest import ContextRetriever, DatastoreRetriever, RestDrafter
from outpace.drafters.stand import (
    StandConfig,
    StandDrafter,
    gumbel_top,
    without_replacement,
)
from outpace.sampling import SamplingConfig, probs
from outpace.tree import depths
from outpace.verify import specinfer_tree

V = 4  # 16 cells in the joint of two tokens: good power for a few thousand runs
PROMPT = [1, 2, 0, 0, 2, 1, 0, 2]  # the greedy rollout of TableLM(seed=1): n-grams recur


class TableLM:
    """A causal 'model' whose logits after a context are table[a, b] for its last two tokens a, b
    (a = V when the context has one token). Implements the Backend protocol, trees included."""

    capabilities = Capabilities(trees=True, hidden_states=False, rollback=True)
    max_context = 4096

    def __init__(self, seed: int, vocab: int = V, scale: float = 1.5, base: torch.Tensor | None = None,
                 noise: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = vocab
        self.name = f"table-{seed}"
        table = torch.randn(vocab + 1, vocab, vocab, generator=g) * scale  # [a, b, next]
        self.table = table if base is None else base + noise * table

    def new_cache(self) -> list[int]:
        return []

    def cache_len(self, cache: list[int]) -> int:
        return len(cache)

    def logits_after(self, context: Sequence[int]) -> torch.Tensor:
        a = context[-2] if len(context) > 1 else self.vocab_size
        return self.table[a, context[-1]]

    def forward(self, cache: list[int], tokens: torch.Tensor, parents: torch.Tensor | None = None,
                hidden_layers: Sequence[int] = (), last_only: bool = False) -> ForwardOutput:
        toks = tokens.tolist()
        par = list(range(-1, len(toks) - 1)) if parents is None else parents.tolist()
        paths: list[list[int]] = []
        for t, p in zip(toks, par):
            paths.append((list(cache) if p < 0 else paths[p]) + [t])
        cache.extend(toks)
        rows = [self.logits_after(path) for path in paths]
        logits = torch.stack(rows[-1:] if last_only else rows)  # [n, vocab]
        return ForwardOutput(logits)

    def rollback(self, cache: list[int], length: int) -> None:
        del cache[length:]

    def keep(self, cache: list[int], start: int, rows: Sequence[int]) -> None:
        cache[start:] = [cache[start + r] for r in rows]


def exact_joint(backend: Any, prompt: list[int], sampling: SamplingConfig) -> dict[tuple[int, int], float]:
    """P(first two tokens) computed from the backend's own logits."""
    def dist(context: list[int]) -> torch.Tensor:
        cache = backend.new_cache()
        return probs(backend.forward(cache, torch.tensor(context)).logits[-1], sampling)

    p1 = dist(prompt)
    p2 = [dist(prompt + [a]) for a in range(V)]
    return {(a, b): float(p1[a] * p2[a][b]) for a in range(V) for b in range(V)}


def joint_pvalue(target: Any, drafter: Any, sampling: SamplingConfig, n: int, max_new: int = 3,
                 draft_length: int = 6) -> tuple[float, float]:
    """(chi-square p-value, mean accepted draft tokens per step) of n seeded generations."""
    counts: Counter = Counter()
    accepted = steps = 0
    for seed in range(n):
        cfg = GenerationConfig(max_new_tokens=max_new, draft_length=draft_length, ignore_eos=True,
                               sampling=SamplingConfig(sampling.temperature, sampling.top_k, sampling.top_p, seed))
        r = Decoder(target, None, drafter).generate(PROMPT, cfg)
        counts[tuple(r.tokens[:2])] += 1
        accepted += sum(r.stats.accepted_lengths)
        steps += r.stats.steps
    return chi_square_pvalue(counts, exact_joint(target, PROMPT, sampling), n), accepted / steps


# ---------------------------------------------------------------------------- verifier level


def _wor_first_token_pvalue(conditional_rows: bool, n: int = 2000) -> float:
    """Emitted first token of a 3-child level drawn without replacement, vs the target p.
    (p, q) are chosen so that the naive rows are clearly off (see test_drafters_structures,
    which computes both output distributions exactly by enumeration)."""
    p_np, q = wor_case()
    sampling = SamplingConfig(temperature=1.0)
    rng = torch.Generator().manual_seed(11)
    counts: Counter = Counter()
    parents = torch.tensor([-1, -1, -1])
    logits = torch.cat([torch.log(torch.tensor(p_np, dtype=torch.float32))[None], torch.zeros(3, V)])  # [4, V]
    for _ in range(n):
        order = gumbel_top(np.log(q), 3, rng)
        rows = without_replacement(q, order) if conditional_rows else [q] * 3
        qt = torch.tensor(np.stack(rows), dtype=torch.float32)  # [3, vocab]
        r = specinfer_tree(torch.tensor(order), parents, qt, logits, sampling, rng)
        counts[int(order[r.accepted[0]]) if r.accepted else r.next_token] += 1
    return chi_square_pvalue(counts, {t: float(p_np[t]) for t in range(V)}, n)


def wor_case() -> tuple[np.ndarray, np.ndarray]:
    """A target p and a draft q over V tokens."""
    return np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.55, 0.25, 0.15, 0.05])


def test_gumbel_top_k_with_conditional_rows_is_lossless():
    assert _wor_first_token_pvalue(conditional_rows=True) > ALPHA


def test_the_same_draws_with_unconditional_rows_are_detected_as_lossy():
    # Without-replacement siblings verified as if i.i.d. from q: the test must reject this.
    assert _wor_first_token_pvalue(conditional_rows=False) < ALPHA


# ---------------------------------------------------------------------------- whole engine

N = 600


@pytest.fixture(scope="module")
def table_target() -> TableLM:
    return TableLM(seed=1)


def _datastore_from(target: TableLM) -> Datastore:
    """A corpus sampled from the target itself, so retrieval finds plausible continuations."""
    g = torch.Generator().manual_seed(3)
    docs = []
    for _ in range(40):
        seq = list(PROMPT)
        for _ in range(12):
            seq.append(int(torch.multinomial(torch.softmax(target.logits_after(seq), -1), 1, generator=g)))
        docs.append(seq)
    return Datastore.build(docs)


DRAFTERS = {
    "recycling": lambda t: RecyclingDrafter(V, RecyclingConfig(k=V)),
    "aded": lambda t: AdedDrafter(AdedConfig(iterations=12, depth=3)),
    # top_k < V: the stored q differs from p, so rejections and residuals are exercised.
    "stand": lambda t: StandDrafter(V, StandConfig(top_k=3, max_children=3)),
    "rest-context": lambda t: RestDrafter(ContextRetriever(16)),
    "rest-datastore": lambda t: RestDrafter(DatastoreRetriever(_datastore_from(t))),
    "rasd": lambda t: RasdDrafter(TableLM(seed=2, base=t.table, noise=0.7), ContextRetriever(16)),
}


@pytest.mark.parametrize("kind", list(DRAFTERS))
def test_engine_is_lossless_at_temperature_one(table_target, kind):
    pvalue, accepted = joint_pvalue(table_target, DRAFTERS[kind](table_target), SamplingConfig(temperature=1.0), N)
    assert accepted > 0.1  # drafts do get accepted: both acceptance and rejection are exercised
    assert pvalue > ALPHA


def test_stand_is_lossless_with_top_p_and_best_of_n_sharing(table_target):
    sampling = SamplingConfig(temperature=0.8, top_p=0.9)
    pvalue, accepted = joint_pvalue(table_target, StandDrafter(V, StandConfig(top_k=2, max_children=2)), sampling, N)
    assert accepted > 0.1 and pvalue > ALPHA


def test_stand_on_the_tiny_transformer():
    """STAND (q rows from Gumbel-top-k) on the tiny transformer of test_lossless_e2e."""
    target = tiny_model(seed=10, vocab=V, scale=0.5)
    drafter = StandDrafter(V, StandConfig(top_k=2, max_children=2))
    pvalue, accepted = joint_pvalue(target, drafter, SamplingConfig(temperature=1.0), 200)
    assert accepted > 0.1 and pvalue > ALPHA


@pytest.mark.slow
def test_rasd_on_tiny_transformers():
    """RASD (drafted q rows fused with point masses) with a tiny transformer draft model."""
    target, draft = tiny_model(seed=10, vocab=V, scale=0.5), tiny_model(seed=11, vocab=V, scale=0.5)
    pvalue, _ = joint_pvalue(target, RasdDrafter(draft, ContextRetriever(16)), SamplingConfig(temperature=1.0), 1000)
    assert pvalue > ALPHA


def test_table_backend_tree_forward_matches_chains():
    """The fake backend itself: a tree forward gives each node the logits of its own path."""
    t = TableLM(seed=4)
    cache = t.new_cache()
    t.forward(cache, torch.tensor([1, 2, 3]))
    out = t.forward(cache, torch.tensor([0, 2, 1]), torch.tensor([-1, 0, -1])).logits
    assert torch.equal(out[1], t.logits_after([1, 2, 3, 0, 2]))
    assert torch.equal(out[2], t.logits_after([1, 2, 3, 1]))
    t.keep(cache, 3, [0, 1])
    assert cache == [1, 2, 3, 0, 2]
    assert int(depths(torch.tensor([-1, 0, -1])).max()) == 2
