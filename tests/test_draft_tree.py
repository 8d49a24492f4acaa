"""Tree drafting with a draft model (SpecTr chains, RSD Gumbel-top-k and beam trees, DySpec):
structural properties of the builders (hypothesis), the draft KV cache across tree forwards and
compaction, greedy equality with autoregressive decoding through the Decoder on tiny fp32
models, and the engine's drafter specs."""

from __future__ import annotations

import zlib
from functools import cache

import pytest
import torch
from conftest import VOCAB, root_path, tiny_model, word_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from outpace.backends.torch import LoadedModel
from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters import draft_tree as dt
from outpace.engine import make_drafter
from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig, make_rng
from outpace.tree import ancestor_mask, children, depths, validate_parents, with_root
from outpace.types import Draft
from outpace.verify.multidraft import ChainsDraft, chain_candidates

# ------------------------------------------------------------------ builder properties

V = 6


@cache
def _logits(seed: int, ctx: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(repr((seed, ctx)).encode()))
    return torch.randn(V, generator=g) * 2.0


def synthetic(seed: int) -> tuple[torch.Tensor, dt.Expand]:
    def expand(tokens: list[int], parents: list[int], need: list[int]) -> torch.Tensor:
        rows = [_logits(seed, root_path(tokens, parents, v)) for v in need]
        return torch.stack(rows)

    return _logits(seed, ()), expand


SAMPLINGS = st.sampled_from(
    [SamplingConfig(), SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.8, top_p=0.7, top_k=4)]
)


def check_tree(draft: Draft, budget: int, sampling: SamplingConfig, distinct: bool = True) -> None:
    """Every parent precedes its child, masks and positions agree with the parents, the node
    budget holds, siblings are distinct, and each node's q row is its parent's distribution."""
    n = len(draft)
    assert n <= budget
    validate_parents(draft.parents)
    d = depths(draft.parents)
    mask = ancestor_mask(draft.parents)
    assert (mask.sum(1) == d).all()  # a node attends to itself and its depth - 1 ancestors
    for i, par in enumerate(draft.parents.tolist()):
        assert d[i] == (1 if par < 0 else d[par] + 1)  # position = start + depth - 1
        if par >= 0:
            assert bool((mask[i] >= mask[par]).all())  # sees everything its parent sees
    full = with_root(draft.parents)
    assert depths(full)[1:].tolist() == (d + 1).tolist()  # the decoder's tree with the root
    kids = children(draft.parents)
    toks = draft.tokens.tolist()
    if distinct:
        for group in kids:
            assert len({toks[c] for c in group}) == len(group)
    if sampling.greedy:
        assert draft.q is None
        return
    assert draft.q is not None and draft.q.shape == (n, V)
    torch.testing.assert_close(draft.q.sum(1), torch.ones(n))
    for group in kids:
        for c in group:
            torch.testing.assert_close(draft.q[c], draft.q[group[0]])  # siblings: one q
            assert float(draft.q[c][toks[c]]) > 0  # drawn tokens have positive probability


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 4), depth=st.integers(1, 4), sampling=SAMPLINGS)
def test_iid_chains_properties(seed, k, depth, sampling):
    root, expand = synthetic(seed)
    draft = dt.iid_chains(root, expand, k, depth, sampling, make_rng(seed))
    assert isinstance(draft, ChainsDraft)
    check_tree(draft, k * depth, sampling)
    chains = 1 if sampling.greedy else k
    assert len(draft.ends) == chains
    assert all(int(depths(draft.parents)[e]) == depth for e in draft.ends)  # full-length chains
    cands = chain_candidates(draft.parents, draft.ends)
    assert len(cands[0]) == chains  # every chain is a candidate at the root
    kids = children(draft.parents)
    for row, nodes in enumerate(cands):
        assert set(nodes) == set(kids[row])  # candidates are the children, with multiplicity


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    branching=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    budget=st.integers(1, 20),
    sampling=SAMPLINGS,
)
def test_gumbel_tree_properties(seed, branching, budget, sampling):
    root, expand = synthetic(seed)
    draft = dt.gumbel_tree(root, expand, branching, budget, sampling, make_rng(seed))
    check_tree(draft, budget, sampling)
    d = depths(draft.parents)
    assert max(d.tolist(), default=0) <= len(branching)
    for i, group in enumerate(children(draft.parents)[1:]):
        assert len(group) <= (branching[int(d[i])] if int(d[i]) < len(branching) else 0)
    assert len(children(draft.parents)[0]) <= branching[0]
    if sampling == SamplingConfig(temperature=1.0):  # full support: only the budget cuts
        full, level = 0, 1
        for b in branching:
            level *= b
            full += level
        assert len(draft) == min(budget, full)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.integers(1, 4), depth=st.integers(1, 4), sampling=SAMPLINGS)
def test_beam_tree_properties(seed, width, depth, sampling):
    root, expand = synthetic(seed)
    draft = dt.beam_tree(root, expand, width, depth, sampling, make_rng(seed))
    check_tree(draft, width * depth, sampling)
    d = depths(draft.parents).tolist()
    for level in range(1, depth + 1):
        assert d.count(level) <= width  # the beam keeps at most `width` sequences per level
    if sampling == SamplingConfig(temperature=1.0):
        assert all(d.count(level) == width for level in range(1, depth + 1))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), budget=st.integers(1, 16), sampling=SAMPLINGS)
def test_dynamic_tree_properties(seed, budget, sampling):
    root, expand = synthetic(seed)
    draft = dt.dynamic_tree(root, expand, budget, sampling, make_rng(seed))
    check_tree(draft, budget, sampling)
    if not sampling.top_p < 1.0:
        assert len(draft) == budget  # full support never runs out of expansions


def test_dynamic_tree_greedy_is_the_best_first_tree():
    """At temperature 0 the heap adds nodes in decreasing path probability (DySpec's greedy)."""
    root, expand = synthetic(5)
    draft = dt.dynamic_tree(root, expand, 8, SamplingConfig(), make_rng(0))
    toks, par = draft.tokens.tolist(), draft.parents.tolist()
    value = []
    for i, (t, p) in enumerate(zip(toks, par)):
        logits = root if p < 0 else expand(toks, par, [p])[0]
        value.append((1.0 if p < 0 else value[p]) * float(logits.softmax(-1)[t]))
    assert value == sorted(value, reverse=True)
    # and nothing outside the tree is better than its worst node
    best_out = 0.0
    for row in range(len(toks) + 1):
        logits = root if row == 0 else expand(toks, par, [row - 1])[0]
        taken = {toks[c] for c in children(draft.parents)[row]}
        base = 1.0 if row == 0 else value[row - 1]
        best_out = max(best_out, max(base * float(q) for x, q in enumerate(logits.softmax(-1)) if x not in taken))
    assert best_out <= min(value) + 1e-9


# ------------------------------------------------------------------ the draft KV cache


@pytest.fixture(scope="module")
def draft_model():
    return tiny_model(seed=1)


def chain_logits(backend, tokens: list[int]) -> torch.Tensor:
    return backend.forward(backend.new_cache(), torch.tensor(tokens)).logits[-1]


def test_draft_cache_tree_logits_equal_chain_logits(draft_model):
    """Incremental feeds, re-feeds and compaction all leave the cache equal to a fresh chain."""
    cache = dt.DraftCache(draft_model)
    committed = [3, 7, 11, 2]
    cache.start(committed)
    root = cache.sync(committed)
    torch.testing.assert_close(root, chain_logits(draft_model, committed))
    tokens, parents = [5, 9], [-1, 0]  # a chain: fed incrementally
    got = cache.expand(tokens, parents, [0])
    got = torch.cat([got, cache.expand(tokens, parents, [1])])
    tokens, parents = [5, 9, 6, 8, 4], [-1, 0, -1, 1, 2]  # branches: re-feed what is needed
    got = torch.cat([got, cache.expand(tokens, parents, [2, 3, 4])])
    for i, logits in enumerate(got):
        path, v = [], i
        while v >= 0:
            path.append(tokens[v])
            v = parents[v]
        torch.testing.assert_close(logits, chain_logits(draft_model, committed + path[::-1]), atol=1e-4, rtol=1e-4)
    cache.compact([0, 1, 3])  # accepted 5, 9, 8
    committed = committed + [5, 9, 8, 1]
    torch.testing.assert_close(cache.sync(committed), chain_logits(draft_model, committed), atol=1e-4, rtol=1e-4)
    assert draft_model.cache_len(cache._held.cache) == len(committed)


# ------------------------------------------------------------------ greedy equality


PROMPTS = [[1, 2, 3, 4, 5, 1, 2, 3, 7, 8, 9, 1, 2], [10, 11, 12, 13, 10, 11, 12, 14, 15, 10, 11], [5]]
GREEDY = GenerationConfig(max_new_tokens=24, draft_length=6)
DRAFTERS = {
    "spectr": lambda d: dt.TreeDrafter(d, dt.SpecTr(k=2, depth=3)),
    "rsd-gumbel": lambda d: dt.TreeDrafter(d, dt.RecursiveSD(branching=(2, 2, 1))),
    "rsd-beam": lambda d: dt.TreeDrafter(d, dt.RecursiveSD(method="beam", width=2, depth=3)),
    "dyspec": lambda d: dt.TreeDrafter(d, dt.DySpec()),
}


@pytest.fixture(scope="module")
def target_model():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def ar_outputs(target_model):
    return [Decoder(target_model, None).generate(p, GREEDY).tokens for p in PROMPTS]


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_greedy_tree_drafting_equals_autoregressive(target_model, draft_model, ar_outputs, name):
    for prompt, expected in zip(PROMPTS, ar_outputs):
        for drafter_model in (draft_model, target_model):  # another model, and self-drafting
            result = Decoder(target_model, None, DRAFTERS[name](drafter_model)).generate(prompt, GREEDY)
            assert result.tokens == expected, (name, prompt)
    self_draft = Decoder(target_model, None, DRAFTERS[name](target_model)).generate(PROMPTS[0], GREEDY)
    assert self_draft.stats.tau > 2.0  # drafting for itself: the greedy path is in the tree


# ------------------------------------------------------------------ engine specs


def fake_loader(models: dict[str, LoadedModel]):
    def load(spec: str, dtype: str, quant: str | None = None) -> LoadedModel:
        return models[spec]

    return load


def test_engine_specs_build_the_tree_drafters(target_model, draft_model):
    tok = word_tokenizer(VOCAB)
    target = LoadedModel(target_model, tok, "tiny-target", ())
    loader = fake_loader({"tiny-draft": LoadedModel(draft_model, tok, "tiny-draft", ())})
    d = make_drafter("spectr:tiny-draft,k=3,depth=2", target, "float32", loader)
    assert isinstance(d, dt.TreeDrafter) and d.method == dt.SpecTr(3, 2)
    d = make_drafter("rsd:tiny-draft,method=beam,width=3,depth=2", target, "float32", loader)
    assert isinstance(d.method, dt.RecursiveSD) and d.method.method == "beam"
    d = make_drafter("rsd:tiny-draft,branching=3-2-1", target, "float32", loader)
    assert d.method.levels == (3, 2, 1)
    d = make_drafter("dyspec:tiny-draft,budget=10", target, "float32", loader)
    assert d.method == dt.DySpec(budget=10)
    for bad, message in [
        ("spectr:", "needs a draft model"),
        ("spectr:k=2", "needs a draft model"),
        ("spectr:tiny-draft,k=0", "k must be an integer >= 1"),
        ("rsd:tiny-draft,method=greedy", "method must be"),
        ("rsd:tiny-draft,branching=2-x", "branching must look like"),
        ("rsd:tiny-draft,method=beam,branching=2-2", "branching applies to method=gumbel"),
        ("dyspec:tiny-draft,budget=-1", "budget must be"),
        ("dyspec:tiny-draft,width=2", "bad drafter option"),
    ]:
        with pytest.raises(OutpaceError, match=message):
            make_drafter(bad, target, "float32", loader)


def test_budget_limits_every_drafter(target_model, draft_model):
    from outpace.drafters.base import DraftContext

    for name, make in DRAFTERS.items():
        drafter = make(draft_model)
        drafter.start(PROMPTS[0])
        for budget in (1, 2, 3, 5):
            for sampling in (SamplingConfig(), SamplingConfig(temperature=1.0)):
                draft = drafter.propose(DraftContext(PROMPTS[0], budget, sampling, make_rng(budget)))
                assert 1 <= len(draft) <= budget, (name, budget)
        assert len(drafter.propose(DraftContext(PROMPTS[0], 0, SamplingConfig(), make_rng(0)))) == 0
