"""The torch backend's cache operations: tree forward, compaction, rollback."""

import torch
from conftest import check_forest

from outpace.tree import with_root


def _chain_logits(backend, prefix, seq):
    cache = backend.new_cache()
    backend.forward(cache, torch.tensor(prefix))
    return backend.forward(cache, torch.tensor(seq)).logits


def test_tree_forward_matches_each_branch_run_as_a_chain(target):
    prefix = [3, 1, 4, 1, 5]
    #   root(9) -> 2 -> 6
    #           \-> 7 -> 8
    #                \-> 0
    tokens = [9, 2, 7, 6, 8, 0]
    parents = torch.tensor([-1, 0, 0, 1, 2, 2])
    cache = target.new_cache()
    target.forward(cache, torch.tensor(prefix))
    tree = target.forward(cache, torch.tensor(tokens), parents).logits  # [6, vocab]
    for path in ([0, 1, 3], [0, 2, 4], [0, 2, 5]):
        chain = _chain_logits(target, prefix, [tokens[i] for i in path])
        torch.testing.assert_close(tree[path], chain, atol=1e-5, rtol=1e-5)


def test_keep_compacts_the_cache_to_the_accepted_path(target):
    prefix = [3, 1, 4, 1, 5]
    tokens = [9, 2, 7, 6, 8]
    parents = with_root(torch.tensor([-1, -1, 0, 1]))  # root 9; 2 and 7 under root; 6<-2, 8<-7
    cache = target.new_cache()
    target.forward(cache, torch.tensor(prefix))
    target.forward(cache, torch.tensor(tokens), parents)
    target.keep(cache, len(prefix), [0, 2, 4])  # root, 7, 8
    assert target.cache_len(cache) == len(prefix) + 3
    after = target.forward(cache, torch.tensor([11])).logits
    expected = _chain_logits(target, prefix + [9, 7, 8], [11])
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_rollback_then_continue_equals_fresh_cache(target):
    cache = target.new_cache()
    target.forward(cache, torch.tensor([1, 2, 3, 4, 5, 6]))
    target.rollback(cache, 3)
    assert target.cache_len(cache) == 3
    after = target.forward(cache, torch.tensor([7])).logits
    torch.testing.assert_close(after, _chain_logits(target, [1, 2, 3], [7]), atol=1e-5, rtol=1e-5)


def test_hidden_states_on_request(target):
    cache = target.new_cache()
    out = target.forward(cache, torch.tensor([1, 2, 3]), hidden_layers=(0, 2))
    assert set(out.hidden) == {0, 2}
    assert out.hidden[2].shape == (3, 32)
    assert target.forward(target.new_cache(), torch.tensor([1])).hidden == {}


def test_a_forest_attaches_every_root_to_the_cache_and_keeps_a_later_roots_path(target):
    check_forest(target, [3, 1, 4, 1, 5], tol=1e-5)
