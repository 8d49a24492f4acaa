"""Statistical losslessness of the tree drafters through the whole engine: a tiny fp32 target
with an 8-token vocabulary, a tiny draft model with its own KV cache, each new drafter with its
own verifier (`ChoosesVerifier`), at temperature > 0 (one setting with top-p). The joint law of
the first two generated tokens is compared by chi-square with the exact one computed from the
target's logits (false-failure rate 1e-4 per test, tests/stats.py)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from stats import ALPHA, chi_square_pvalue

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters import draft_tree as dt
from outpace.sampling import SamplingConfig, probs

V = 8
PROMPT = [1, 2, 3]
DRAFTERS = {
    "spectr": lambda d: dt.TreeDrafter(d, dt.SpecTr(k=3, depth=2)),
    "rsd-gumbel": lambda d: dt.TreeDrafter(d, dt.RecursiveSD(branching=(3, 1))),
    "rsd-beam": lambda d: dt.TreeDrafter(d, dt.RecursiveSD(method="beam", width=3, depth=2)),
    "dyspec": lambda d: dt.TreeDrafter(d, dt.DySpec()),
}


def exact_joint(backend, sampling):
    p1 = probs(backend.forward(backend.new_cache(), torch.tensor(PROMPT)).logits[-1], sampling)
    out = {}
    for a in range(V):
        p2 = probs(backend.forward(backend.new_cache(), torch.tensor(PROMPT + [a])).logits[-1], sampling)
        for b in range(V):
            out[(a, b)] = float(p1[a] * p2[b])
    return out


def pvalue(target, drafter, sampling, n) -> float:
    decoder = Decoder(target, None, drafter)
    counts: Counter = Counter()
    for seed in range(n):
        s = SamplingConfig(sampling.temperature, sampling.top_k, sampling.top_p, seed)
        counts[tuple(decoder.generate(PROMPT, GenerationConfig(max_new_tokens=2, draft_length=6, sampling=s)).tokens)] += 1
    return chi_square_pvalue(counts, exact_joint(target, sampling), n)


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_tree_drafters_are_lossless_end_to_end(small_target, small_draft, name):
    sampling = SamplingConfig(temperature=0.9, top_p=0.9) if name in ("spectr", "rsd-beam") else SamplingConfig(temperature=1.0)
    assert pvalue(small_target, DRAFTERS[name](small_draft), sampling, 300) > ALPHA


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DRAFTERS))
def test_tree_drafters_are_lossless_end_to_end_many_draws(small_target, small_draft, name):
    for sampling in (SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.8, top_p=0.9)):
        assert pvalue(small_target, DRAFTERS[name](small_draft), sampling, 3000) > ALPHA
