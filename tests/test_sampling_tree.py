import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig, probs
from outpace.tree import (
    ancestor_mask,
    build_trie,
    children,
    depths,
    validate_parents,
    with_root,
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"top_k": 2.5},
        {"seed": "x"},
    ],
)
def test_bad_sampling_settings_are_clear_errors(kwargs):
    with pytest.raises(OutpaceError, match=next(iter(kwargs)).split("_")[0]):
        SamplingConfig(**kwargs)


def test_probs_greedy_is_one_hot():
    p = probs(torch.tensor([[0.1, 2.0, -1.0]]), SamplingConfig())
    assert p.tolist() == [[0.0, 1.0, 0.0]]


def test_probs_top_k_and_top_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    p = probs(logits, SamplingConfig(temperature=1.0, top_k=2))
    torch.testing.assert_close(p, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    # top_p 0.8: 0.5 + 0.3 reaches 0.8, so the smallest set is the first two tokens.
    p = probs(logits, SamplingConfig(temperature=1.0, top_p=0.8))
    torch.testing.assert_close(p, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    p = probs(logits, SamplingConfig(temperature=1.0, top_p=0.81))
    torch.testing.assert_close(p, torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)
    # top_p keeps the top-1 token even when it alone exceeds top_p
    assert probs(logits, SamplingConfig(temperature=1.0, top_p=0.01)).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_probs_temperature():
    logits = torch.tensor([1.0, 0.0])
    p = probs(logits, SamplingConfig(temperature=0.5))
    torch.testing.assert_close(p, torch.tensor([2.0, 0.0]).softmax(-1))


def test_tree_helpers_on_a_hand_made_tree():
    #      root
    #     /    \
    #    0      1
    #   / \      \
    #  2   3      4
    parents = torch.tensor([-1, -1, 0, 0, 1])
    assert depths(parents).tolist() == [1, 1, 2, 2, 2]
    assert children(parents) == [[0, 1], [2, 3], [4], [], [], []]
    m = ancestor_mask(parents)
    assert m[4].tolist() == [False, True, False, False, True]
    assert m[3].tolist() == [True, False, False, True, False]
    assert with_root(parents).tolist() == [-1, 0, 0, 1, 1, 2]
    with pytest.raises(ValueError):
        validate_parents(torch.tensor([-1, 1]))


def test_build_trie_shares_prefixes():
    tokens, parents = build_trie([[5, 6, 7], [5, 6, 8], [9]])
    assert tokens == [5, 6, 7, 8, 9]
    assert parents == [-1, 0, 1, 1, -1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=5), min_size=1, max_size=6))
def test_trie_properties(seqs):
    tokens, parents = build_trie(seqs)
    par = torch.tensor(parents)
    validate_parents(par)  # every parent precedes its child
    kids = children(par)
    for group in kids:  # siblings are distinct tokens
        assert len({tokens[c] for c in group}) == len(group)
    mask = ancestor_mask(par)
    d = depths(par)
    assert (mask.sum(1) == d).all()  # a node sees exactly depth-many nodes (itself + ancestors)
    # every input sequence is a root-to-node path
    for seq in seqs:
        node = -1
        for t in seq:
            node = next(c for c in kids[node + 1] if tokens[c] == t)
        assert d[node] == len(seq)
