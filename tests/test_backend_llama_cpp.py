"""The llama.cpp backend on tiny GGUF files written in the test: cache operations, greedy
equality of speculative and autoregressive decoding, and statistical losslessness on its logits."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

pytest.importorskip("llama_cpp")

from conftest import check_forest
from stats import ALPHA, chi_square_pvalue
from test_decoder import OracleDrafter
from tiny_gguf import write_tiny_gguf

from outpace.backends.llama_cpp import LlamaCppBackend
from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.drafters.draft_tree import (
    DySpec,
    RecursiveSD,
    SpecTr,
    TreeDrafter,
)
from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter
from outpace.sampling import SamplingConfig, probs
from outpace.tree import with_root

W = 259  # first word token
PROMPTS = [[1, W, W + 1, W + 2, W, W + 1, W + 3], [1, 40, 41, 42, 40, 41, 43, 40], [1, 100]]


@pytest.fixture(scope="module")
def gguf_target(tmp_path_factory):
    return LlamaCppBackend(write_tiny_gguf(tmp_path_factory.mktemp("g") / "t.gguf", seed=0), threads=1)


@pytest.fixture(scope="module")
def gguf_draft(tmp_path_factory):
    return LlamaCppBackend(write_tiny_gguf(tmp_path_factory.mktemp("g") / "d.gguf", seed=1), threads=1)


def chain_logits(backend, prefix, seq):
    cache = backend.new_cache()
    backend.forward(cache, torch.tensor(prefix))
    return backend.forward(cache, torch.tensor(seq)).logits


def test_batched_forward_matches_one_token_at_a_time(gguf_target):
    b = gguf_target
    full = chain_logits(b, [1, 5, 6], [7, 8, 9])
    cache = b.new_cache()
    b.forward(cache, torch.tensor([1, 5, 6]))
    single = torch.cat([b.forward(cache, torch.tensor([t])).logits for t in (7, 8, 9)])
    torch.testing.assert_close(full, single, atol=1e-3, rtol=1e-3)


def test_tree_forward_matches_each_branch(gguf_target):
    prefix = [1, 30, 31, 32]
    tokens = [9, 2, 7, 6, 8, 0]
    parents = torch.tensor([-1, 0, 0, 1, 2, 2])
    cache = gguf_target.new_cache()
    gguf_target.forward(cache, torch.tensor(prefix))
    tree = gguf_target.forward(cache, torch.tensor(tokens), parents).logits
    gguf_target.keep(cache, len(prefix), [0])
    for path in ([0, 1, 3], [0, 2, 4], [0, 2, 5]):
        chain = chain_logits(gguf_target, prefix, [tokens[i] for i in path])
        torch.testing.assert_close(tree[path], chain, atol=1e-3, rtol=1e-3)


def test_a_forest_attaches_every_root_to_the_cache_and_keeps_a_later_roots_path(gguf_target):
    check_forest(gguf_target, [1, 30, 31, 32], tol=1e-3)


def test_a_tree_larger_than_the_micro_batch_is_split_and_still_exact(tmp_path):
    small = LlamaCppBackend(write_tiny_gguf(tmp_path / "t.gguf", seed=0), threads=1, n_batch=64, n_ubatch=4)
    prefix, tokens = [1, 30, 31, 32], [9, 2, 7, 6, 8, 0, 5, 4, 3, 11]
    parents = torch.tensor([-1, 0, 0, 1, 2, 2, 3, 4, 5, 8])  # 10 nodes in micro-batches of 4
    cache = small.new_cache()
    small.forward(cache, torch.tensor(prefix))
    tree = small.forward(cache, torch.tensor(tokens), parents).logits
    small.keep(cache, len(prefix), [0])
    for path in ([0, 1, 3, 6], [0, 2, 4, 7], [0, 2, 5, 8, 9]):
        chain = chain_logits(small, prefix, [tokens[i] for i in path])
        torch.testing.assert_close(tree[path], chain, atol=1e-3, rtol=1e-3)


def test_keep_compacts_to_the_accepted_path_and_frees_scratch_sequences(gguf_target):
    b = gguf_target
    free_before = len(b._pool.free)
    prefix = [1, 30, 31, 32]
    cache = b.new_cache()
    b.forward(cache, torch.tensor(prefix))
    b.forward(cache, torch.tensor([9, 2, 7, 6, 8]), with_root(torch.tensor([-1, -1, 0, 1])))
    b.keep(cache, len(prefix), [0, 2, 4])  # root 9, then 7, then 8
    assert b.cache_len(cache) == len(prefix) + 3
    after = b.forward(cache, torch.tensor([11])).logits
    torch.testing.assert_close(after, chain_logits(b, prefix + [9, 7, 8], [11]), atol=1e-3, rtol=1e-3)
    del cache
    assert len(b._pool.free) == free_before


def test_rollback(gguf_target):
    cache = gguf_target.new_cache()
    gguf_target.forward(cache, torch.tensor([1, 2, 3, 4, 5, 6]))
    gguf_target.rollback(cache, 3)
    after = gguf_target.forward(cache, torch.tensor([7])).logits
    torch.testing.assert_close(after, chain_logits(gguf_target, [1, 2, 3], [7]), atol=1e-3, rtol=1e-3)


def test_rollback_into_a_tree_keeps_its_root_chain_only(gguf_target):
    b = gguf_target
    prefix = [1, 30, 31, 32]
    cache = b.new_cache()
    b.forward(cache, torch.tensor(prefix))
    b.forward(cache, torch.tensor([9, 2, 7, 6]), torch.tensor([-1, 0, 1, 0]))  # 9 -> 2 -> 7 is a chain
    b.rollback(cache, len(prefix) + 3)
    after = b.forward(cache, torch.tensor([11])).logits
    torch.testing.assert_close(after, chain_logits(b, prefix + [9, 2, 7], [11]), atol=1e-3, rtol=1e-3)
    b.forward(cache, torch.tensor([9, 2, 7]), torch.tensor([-1, 0, 0]))
    with pytest.raises(ValueError, match="chain from its root"):
        b.rollback(cache, b.cache_len(cache))  # node 2's parent is the root, not node 1
    # keep() from before the tree: rows of the kept chain [9, 2, 7, 11], then tree rows
    b.keep(cache, len(prefix), [0, 1, 2, 3, 4, 6])  # + tree nodes 9 and its child 7
    after = b.forward(cache, torch.tensor([5])).logits
    # (batch shapes differ from the reference's: rounding up to a few 1e-3; a wrong context is far off)
    torch.testing.assert_close(after, chain_logits(b, prefix + [9, 2, 7, 11, 9, 7], [5]), atol=5e-3, rtol=1e-3)


CFG = GenerationConfig(max_new_tokens=32, draft_length=4)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_speculative_equals_autoregressive(gguf_target, gguf_draft, prompt):
    ar = Decoder(gguf_target, None).generate(prompt, CFG).tokens
    drafters = [
        DraftModelDrafter(gguf_draft),
        DraftModelDrafter(gguf_target),  # self-drafting: two caches on one llama.cpp context
        PromptLookupDrafter(),
        PromptLookupDrafter(PromptLookupConfig(branches=3)),
        OracleDrafter(prompt + ar),
        OracleDrafter(prompt + ar, wrong=True),
        OracleDrafter(prompt + ar, tree=True),
        TreeDrafter(gguf_draft, SpecTr()),
        TreeDrafter(gguf_draft, RecursiveSD()),
        TreeDrafter(gguf_draft, RecursiveSD(method="beam")),
        TreeDrafter(gguf_draft, DySpec()),  # grows its tree over several draft forwards
    ]
    for drafter in drafters:
        assert Decoder(gguf_target, None, drafter).generate(prompt, CFG).tokens == ar, drafter.name


def test_sampling_on_llama_cpp_logits_is_lossless(gguf_target, gguf_draft):
    """Chi-square on the first two tokens against the exact joint from the backend's logits;
    top-k 6 keeps 36 cells; false-failure rate 1e-4 (tests/stats.py)."""
    prompt, n = [1, 50, 51], 1500
    sampling = SamplingConfig(temperature=1.0, top_k=6)
    p1 = probs(chain_logits(gguf_target, prompt[:-1], prompt[-1:])[-1], sampling)
    exact = {}
    for a in p1.nonzero().flatten().tolist():
        p2 = probs(chain_logits(gguf_target, prompt, [a])[-1], sampling)
        for b in p2.nonzero().flatten().tolist():
            exact[(a, b)] = float(p1[a] * p2[b])
    counts = Counter()
    drafter = DraftModelDrafter(gguf_draft)
    for seed in range(n):
        cfg = GenerationConfig(max_new_tokens=2, draft_length=3, sampling=SamplingConfig(1.0, 6, 1.0, seed))
        counts[tuple(Decoder(gguf_target, None, drafter).generate(prompt, cfg).tokens)] += 1
    assert chi_square_pvalue(counts, exact, n) > ALPHA


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_requantized_weights_decode_speculatively_as_their_own_ar(tmp_path, gguf_draft, fmt):
    """Each weight format is its own target: speculative greedy equals that file's AR output."""
    from outpace.backends.llama_cpp import requantize

    src = write_tiny_gguf(tmp_path / "t.gguf", seed=0)
    out = requantize(str(src), fmt, threads=1, cache=tmp_path)
    assert out.exists() and out.stat().st_size < src.stat().st_size
    assert requantize(str(src), fmt, threads=1, cache=tmp_path) == out  # cached, not redone
    target = LlamaCppBackend(out, threads=1)
    for prompt in PROMPTS:
        ar = Decoder(target, None).generate(prompt, CFG).tokens
        for drafter in (DraftModelDrafter(gguf_draft), PromptLookupDrafter(PromptLookupConfig(branches=3))):
            assert Decoder(target, None, drafter).generate(prompt, CFG).tokens == ar, (fmt, drafter.name)
