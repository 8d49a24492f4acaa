"""The data structures of the model-free drafters, on hand-made sequences: the n-gram index, the
weighted trie, Token Recycling's adjacency matrix and template walk, ADED's tri-gram matrix and
search, STAND's n-gram module and slot statistics, the suffix-array datastore, RASD's pruning and
fused tree; and that a draft step reads only the tail of the context."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from outpace.datastore import SEPARATOR, Datastore, read_corpus, suffix_array
from outpace.drafters.aded import (
    AdedConfig,
    AdedDrafter,
    TrigramMatrix,
    mcts_paths,
    trigram_csr,
)
from outpace.drafters.base import DraftContext
from outpace.drafters.ngram import ContextIndex, gather_rows
from outpace.drafters.prompt_lookup import PromptLookupDrafter
from outpace.drafters.rasd import Fused, fuse, fused_q, prune_scores
from outpace.drafters.recycling import (
    AdjacencyMatrix,
    RecyclingConfig,
    RecyclingDrafter,
    budget_order,
    build_tree,
    paper_template,
)
from outpace.drafters.rest import (
    ContextRetriever,
    DatastoreRetriever,
    RestConfig,
    RestDrafter,
)
from outpace.drafters.stand import (
    LogitNgramTable,
    SlotStats,
    StandConfig,
    StandDrafter,
    gumbel_top,
    merge_mean,
    without_replacement,
)
from outpace.drafters.trie import prefix_trie, select_top
from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig
from outpace.types import VerifyResult

GREEDY = SamplingConfig()


def ctx(tokens, budget=8, sampling=GREEDY, seed=0):
    return DraftContext(tokens, budget, sampling, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- n-gram index


def test_context_index_finds_earlier_occurrences_most_recent_first():
    index = ContextIndex(3)
    index.reset([1, 2, 3, 4, 1, 2, 5, 1, 2])
    assert index.earlier(2) == [6, 2]  # "1 2" was followed at positions 6 and 2
    assert index.continuations(3, 1, 2, 3) == [[5, 1], [3, 4]]  # 3-gram "5 1 2" never recurred
    assert index.lookup(3, 1, 2, 3) == (2, [[5, 1], [3, 4]])  # ...so the match is 2 tokens long
    rows, span = index.retrieve(3, 1, 4, 8)
    assert rows.tolist() == [[5, 1, 2, -1], [3, 4, 1, 2]] and span == 2  # -1: the context ends
    assert index.lookup(3, 1, 2, 3) == (2, [[5, 1], [3, 4]])
    assert ContextIndex(3).lookup(3, 1, 2, 3) == (0, [])


def test_context_index_syncs_incrementally_and_rebuilds_on_a_new_sequence():
    index = ContextIndex(2)
    index.reset([7, 8])
    index.sync([7, 8, 9, 7, 8])
    assert len(index) == 5 and index.earlier(2) == [2]
    index.sync([3, 3, 3])  # not an extension: rebuilt
    assert index.array.tolist() == [3, 3, 3] and index.earlier(2) == [2]
    assert gather_rows(np.array([4, 5, 6]), np.array([1, 2]), 3).tolist() == [[5, 6, -1], [6, -1, -1]]
    with pytest.raises(OutpaceError, match="max_n"):
        ContextIndex(0)


# ---------------------------------------------------------------------------- weighted trie


def test_prefix_trie_weights_and_top_selection():
    rows = np.array([[1, 2, 3], [1, 2, 4], [1, 5, -1], [6, -1, -1]])
    trie = prefix_trie(rows)
    nodes = {(int(t), int(p)): float(w) for t, p, w in zip(trie.tokens, trie.parents, trie.weight)}
    assert nodes == {(1, -1): 3, (6, -1): 1, (2, 0): 2, (5, 0): 1, (3, 2): 1, (4, 2): 1}
    assert trie.depth.tolist() == [1, 1, 2, 2, 3, 3] and trie.first.tolist() == [0, 1, 0, 0, 0, 0]
    top = select_top(trie, trie.weight, 3)  # 1 (3), then "1 2" (2), then the shallower of the ties
    assert top.tokens.tolist() == [1, 6, 2] and top.parents.tolist() == [-1, -1, 0]
    weighted = prefix_trie(rows, np.array([1.0, 1.0, 1.0, 10.0]))
    assert select_top(weighted, weighted.weight, 1).tokens.tolist() == [6]
    assert len(prefix_trie(np.zeros((0, 3), dtype=np.int64))) == 0


# ---------------------------------------------------------------------------- Token Recycling


def test_paper_template_and_budget_order():
    t = paper_template()
    assert len(t) == 80 and [sum(len(p) == d for p in t) for d in range(1, 7)] == [8, 21, 25, 15, 8, 3]
    assert all(max(p) < 4 for p in paper_template(4))
    order = budget_order(t, 0.5)
    seen = set()
    for i in order:  # every prefix of the order is a tree
        assert len(t[i]) == 1 or t[i][:-1] in seen
        seen.add(t[i])


def test_adjacency_matrix_after_known_updates():
    adj = AdjacencyMatrix(vocab=151936, k=8)
    adj.update(np.array([5, 9, 5]), np.array([[1] * 8, [2] * 8, [3] * 8], dtype=np.int32))
    assert adj.candidates(5).tolist() == [3] * 8  # the last write of a repeated token wins
    assert adj.candidates(9).tolist() == [2] * 8 and adj.candidates(4) is None
    adj.update(np.array([9]), np.arange(8, dtype=np.int32)[None])
    assert adj.candidates(9).tolist() == list(range(8)) and adj.used == 3
    adj.update(np.arange(1000, 3000), np.zeros((2000, 8), dtype=np.int32))
    assert adj.nbytes < 2 * 2**20  # Qwen's vocabulary, 2000 tokens seen: under 2 MB


def test_recycling_tree_walks_the_template():
    adj = AdjacencyMatrix(vocab=20, k=3)
    adj.update(np.array([5, 7, 8]), np.array([[7, 8, 7], [9, 10, 11], [12, 12, 13]], dtype=np.int32))
    template = [(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (1, 1), (0, 0, 0)]
    tokens, parents = build_tree(adj, 5, template, range(len(template)), budget=10)
    # root 5 -> 7, 8 (the 3rd candidate repeats 7); 7 -> 9, 10; 8 -> 12 (12 again dropped);
    # 9 has no candidates, so (0, 0, 0) is skipped.
    assert tokens == [7, 8, 9, 10, 12] and parents == [-1, -1, 0, 0, 1]
    assert build_tree(adj, 5, template, range(len(template)), budget=3) == ([7, 8, 9], [-1, -1, 0])
    assert build_tree(adj, 3, template, range(len(template)), budget=5) == ([0], [-1])  # unseen root


def test_recycling_observe_recycles_every_tree_position():
    drafter = RecyclingDrafter(10, RecyclingConfig(k=2))
    draft = drafter.propose(ctx([1, 4]))
    assert draft.tokens.tolist() == [0]  # nothing known about 4 yet: the placeholder
    logits = torch.zeros(2, 10)
    logits[0, [6, 3]] = torch.tensor([2.0, 1.0])  # after the root 4
    logits[1, [8, 9]] = torch.tensor([1.0, 2.0])  # after the node 0
    drafter.observe(draft, VerifyResult([], 6, True), logits)
    assert drafter.adj.candidates(4).tolist() == [6, 3] and drafter.adj.candidates(0).tolist() == [9, 8]
    assert drafter.propose(ctx([1, 4], budget=2)).tokens.tolist() == [6, 3]
    with pytest.raises(OutpaceError, match="k"):
        RecyclingConfig(k=0)


# ---------------------------------------------------------------------------- ADED


def test_trigram_counts_are_normalized_and_pruned():
    toks = np.array([1, 2, 3, 1, 2, 3, 1, 2, 4, SEPARATOR, 1, 2, 3])
    m = TrigramMatrix(successors=12)
    m.load_corpus(toks)
    assert m.get(1, 2) == pytest.approx({3: 0.75, 4: 0.25})  # across the separator: not counted
    assert m.get(2, 3) == {1: 1.0} and m.get(2, 4) == {}
    keys, offs, succ, _ = trigram_csr(toks, keep=1)
    assert offs.tolist() == list(range(keys.shape[0] + 1)) and succ[keys.tolist().index((1 << 32) | 2)] == 3
    m.add(1, 2, 4, 0.5, cap=3.0)  # copy on write into the adaptive overlay
    assert m.get(1, 2) == pytest.approx({3: 0.75, 4: 0.75}) and m.top(1, 2)[0] == [3, 4]
    m.add(1, 2, 4, 5.0, cap=3.0)
    assert m.get(1, 2)[4] == 3.0


def test_mcts_prefers_the_heavy_path():
    table = {(0, 1): ([2, 3], [0.9, 0.1]), (1, 2): ([4], [1.0]), (1, 3): ([5], [1.0]),
             (2, 4): ([6], [1.0]), (3, 5): ([7], [1.0])}

    def succ(a, b):
        return table.get((a, b), ([], []))

    paths = mcts_paths(succ, (0, 1), AdedConfig(iterations=40, depth=3), np.random.default_rng(0))
    best, visits = paths[0]
    assert best == [2] + [4] and visits == max(v for _, v in paths)  # extended by its best successor
    assert [2, 4, 6] in [p for p, _ in paths] and all(v > 0 for _, v in paths)


def test_aded_adapts_to_the_window_and_drafts_a_tree():
    drafter = AdedDrafter(AdedConfig(iterations=30, depth=3))
    drafter.start([1, 2, 3, 1, 2, 3])
    draft = drafter.propose(ctx([1, 2, 3, 1, 2, 3, 1, 2], budget=3))
    assert draft.tokens.tolist()[:1] == [3]
    assert drafter.matrix.get(1, 2)[3] == pytest.approx(0.04 * 4)  # twice in the prompt, twice in the window


def test_aded_overlay_is_bounded_in_rows_and_entries():
    m = TrigramMatrix(successors=2, max_bigrams=2)
    m.add(1, 2, 3, 0.5, 3.0)
    m.add(4, 5, 6, 0.5, 3.0)
    m.add(1, 2, 4, 0.1, 3.0)  # touching (1, 2) makes (4, 5) the least recently adapted
    m.add(7, 8, 9, 0.5, 3.0)
    assert list(m.overlay) == [(1, 2), (7, 8)]
    for c, w in ((5, 0.2), (6, 0.3), (7, 0.05)):  # 5 successors > 2 * 2: the lightest other goes
        m.add(1, 2, c, w, 3.0)
    assert m.get(1, 2) == pytest.approx({3: 0.5, 5: 0.2, 6: 0.3, 7: 0.05})
    before = m.nbytes()
    for a in range(100):
        m.add(a, a + 1, a + 2, 0.1, 3.0)
    assert len(m.overlay) == 2 and m.nbytes() < 2 * before


def test_deep_size_counts_containers_arrays_and_tensors_once():
    from outpace.drafters.base import deep_size

    arr = np.zeros(1000, dtype=np.int64)
    assert deep_size(arr) == 8000
    assert deep_size(torch.zeros(10, dtype=torch.float32)) == 40
    assert deep_size({1: [arr, arr]}) == deep_size({1: [arr]}) + 8  # the list holds one more pointer
    assert deep_size([]) > 0


# ---------------------------------------------------------------------------- STAND


def test_merge_mean_matches_the_running_average():
    first = ({10: 0.7, 11: 0.2, 12: 0.05}, 1)  # the example of the paper's n-gram module
    got, count = merge_mean(first, {10: 0.3, 11: 0.6, 13: 0.05}, top_k=10)
    assert count == 2 and got == pytest.approx({10: 0.5, 11: 0.4, 12: 0.025, 13: 0.025})
    third, _ = merge_mean((got, 2), {12: 1.0}, top_k=2)
    assert third == pytest.approx({10: 1 / 3, 12: 0.35})  # 0.025 * 2/3 + 1/3, best first
    assert list(merge_mean(first, {13: 1.0}, top_k=2)[0]) == [13, 10]  # 0.5 > 0.35


def test_logit_ngram_table_backs_off_to_shorter_ngrams():
    table = LogitNgramTable(max_n=3, min_n=1, top_k=4)
    table.observe([5, 6, 7], {1: 0.6, 2: 0.4})
    table.observe([9, 7], {3: 1.0})
    toks, p = table.lookup([5, 6, 7])
    assert toks.tolist() == [1, 2]  # the 3-gram
    toks, p = table.lookup([4, 4, 7])  # only the 1-gram "7" matches: both observations merged
    assert dict(zip(toks.tolist(), p.tolist())) == pytest.approx({1: 0.3, 2: 0.2, 3: 0.5})
    assert table.lookup([8]) is None


def test_gumbel_top_k_draws_distinct_tokens_and_conditional_rows():
    logp = np.log(np.array([0.5, 0.3, 0.2]))
    assert gumbel_top(logp, 2, None).tolist() == [0, 1]
    draws = {tuple(gumbel_top(logp, 3, torch.Generator().manual_seed(s)).tolist()) for s in range(50)}
    assert all(sorted(d) == [0, 1, 2] for d in draws) and len(draws) > 1
    rows = without_replacement(np.array([0.5, 0.3, 0.2]), np.array([1, 0, 2]))
    assert np.allclose(rows[0], [0.5, 0.3, 0.2]) and np.allclose(rows[1], [0.5 / 0.7, 0, 0.2 / 0.7])
    assert np.allclose(rows[2], [0, 0, 1])


def _recursive_rejection(p, q, conditional):
    """Exact output distribution of SpecInfer's recursive rejection over all ordered draws of
    len(q) - 1 children without replacement from q."""
    v = len(p)
    out = np.zeros(v)
    for draw in itertools.permutations(range(v), v - 1):
        left, prob, rows = q.copy(), 1.0, []
        for x in draw:
            row = left / left.sum()
            prob *= row[x]
            rows.append(row if conditional else q)
            left[x] = 0.0
        cur, reach = p.copy(), prob
        for x, row in zip(draw, rows):
            a = min(1.0, cur[x] / row[x])
            out[x] += reach * a
            reach *= 1 - a
            r = np.maximum(cur - row, 0.0)
            cur = r / r.sum() if r.sum() > 0 else cur
        out += reach * cur
    return out


def test_without_replacement_rows_make_recursive_rejection_exact():
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.55, 0.25, 0.15, 0.05])
    assert np.allclose(_recursive_rejection(p, q, conditional=True), p, atol=1e-12)
    naive = _recursive_rejection(p, q, conditional=False)  # what i.i.d. rows would claim
    assert 0.5 * np.abs(naive - p).sum() > 0.2


def test_slot_statistics_shape_the_tree():
    stats = SlotStats(max_depth=3, max_children=2, prior=0.5)
    assert stats.shape(3) == [(0,), (1,), (0, 0)]
    for _ in range(50):  # rank 1 at depth 1 keeps winning
        stats.record([(0,), (1,), (1, 0)], accepted=[1, 2])
    assert stats.prop[0].tolist() == [50, 50] and stats.acc[0].tolist() == [0, 50]
    assert stats.acc[1, 0] == 50 and stats.shape(2) == [(1,), (1, 0)]


def test_stand_best_of_n_keeps_the_module_for_the_same_prompt():
    drafter = StandDrafter(16, StandConfig(max_n=2))
    drafter.start([1, 2, 3])
    entries = len(drafter.table.entries)
    drafter.table.observe([3], {9: 1.0})
    drafter.start([1, 2, 3])  # another sample of the same prompt: kept
    assert drafter.table.lookup([3])[0].tolist() == [9]
    drafter.start([4, 5])  # a new prompt: fresh module
    assert drafter.table.lookup([3]) is None and len(drafter.table.entries) < entries + 1
    with pytest.raises(OutpaceError, match="share"):
        StandConfig(share="sometimes")


def test_stand_draft_carries_conditional_q_rows():
    drafter = StandDrafter(6, StandConfig(max_n=1, max_children=2))
    drafter.start([0])
    drafter.table.observe([3], {1: 0.5, 2: 0.3, 4: 0.2})
    draft = drafter.propose(ctx([3], budget=2, sampling=SamplingConfig(temperature=1.0), seed=4))
    assert draft.q is not None and draft.parents.tolist() == [-1, -1]
    first = draft.tokens.tolist()[0]
    assert draft.q[0, [1, 2, 4]].tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert float(draft.q[1, first]) == 0.0 and float(draft.q[1].sum()) == pytest.approx(1.0)
    greedy = drafter.propose(ctx([3], budget=2))
    assert greedy.q is None and greedy.tokens.tolist() == [1, 2]


# ---------------------------------------------------------------------------- REST datastore


@pytest.mark.parametrize("seed", range(5))
def test_suffix_array_sorts_suffixes(seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 4, 60)
    tokens[rng.integers(0, 60, 5)] = SEPARATOR
    suffixes = [tuple(tokens[i:].tolist()) for i in range(60)]
    assert suffix_array(tokens, 64).tolist() == sorted(range(60), key=lambda i: suffixes[i])
    for depth in (1, 3):  # ordered on (at least) the first `depth` tokens
        order = suffix_array(tokens, depth).tolist()
        assert sorted(order) == list(range(60))
        keys = [suffixes[i][:depth] for i in order]
        assert keys == sorted(keys)


def test_datastore_retrieval_on_a_hand_made_corpus(tmp_path):
    store = Datastore.build([[1, 2, 3, 4], [1, 2, 3, 5], [2, 3, 4, 6], [9, 1, 2]], sort_depth=8)
    assert store.tokens.tolist() == [1, 2, 3, 4, -1, 1, 2, 3, 5, -1, 2, 3, 4, 6, -1, 9, 1, 2, -1]
    lo, hi = store.match([2, 3])
    assert hi - lo == 3 and sorted(store.suffixes[lo:hi].tolist()) == [1, 6, 10]
    assert store.longest_match([7, 1, 2, 3], max_n=16, min_n=1) == (3, *store.match([1, 2, 3]))
    rows, span = store.retrieve([7, 1, 2, 3], max_n=16, min_n=2, length=3, limit=10)
    assert sorted(rows.tolist()) == [[4, -1, 1], [5, -1, 2]]  # continuations stop at documents' ends
    assert span == 3  # "1 2 3" matched
    rows, span = store.retrieve([8, 8], 16, 2, 3, 10)
    assert rows.shape == (0, 3) and span == 0
    path = tmp_path / "ds.bin"
    store.save(path)
    loaded = Datastore.load(path)
    assert loaded.meta == store.meta and loaded.tokens.tolist() == store.tokens.tolist()
    assert loaded.suffixes.tolist() == store.suffixes.tolist()
    assert RestDrafter(DatastoreRetriever(loaded)).propose(ctx([0, 1, 2, 3], budget=4)).tokens.tolist() == [4, 5]
    (tmp_path / "bad.bin").write_bytes(b"nonsense")
    with pytest.raises(OutpaceError, match="not an outpace datastore"):
        Datastore.load(tmp_path / "bad.bin")


def test_rest_trie_counts_continuations():
    # "1 2" was followed by 3 4, 3 4 and 3 5: the trie prefers 3, then 4.
    retriever = ContextRetriever(16)
    drafter = RestDrafter(retriever, RestConfig(min_span=2, length=2))
    drafter.start([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 5, 1, 2])
    draft = drafter.propose(ctx([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 5, 1, 2], budget=2))
    assert draft.tokens.tolist() == [3, 4] and draft.parents.tolist() == [-1, 0]
    # "3 5 1 2" never recurred, "5 1 2" neither: the match behind node 3 is "1 2", then "1 2 3"
    assert draft.grades is not None and draft.grades.tolist() == [2, 3]


def test_prompt_lookup_grades_count_the_match_behind_each_node():
    from outpace.drafters.ngram import MAX_GRADE, match_grades
    from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter

    tokens = [1, 2, 3, 4, 9, 2, 3, 4, 5, 6, 2, 3]
    chain = PromptLookupDrafter()
    chain.start(tokens)
    draft = chain.propose(ctx(tokens, budget=3))  # "6 2 3" never recurred; "2 3" did, twice
    assert draft.tokens.tolist() == [4, 5, 6] and draft.grades.tolist() == [2, 3, 4]
    tree = PromptLookupDrafter(PromptLookupConfig(branches=2))
    tree.start(tokens)
    draft = tree.propose(ctx(tokens, budget=4))  # two matches of "2 3": 4 5 and 4 9, merged
    assert draft.parents.tolist() == [-1, 0, 0] and draft.grades.tolist() == [2, 3, 3]
    assert match_grades(15, torch.tensor([-1, 0, 1])).tolist() == [15, 16, MAX_GRADE]


def test_read_corpus_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"turns": ["one", "two"]}) + "\n\n" + json.dumps({"text": "three"}) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([{"conversations": [{"value": "four"}, {"content": "five"}]}]))
    (tmp_path / "c.txt").write_text("six seven")
    docs = list(read_corpus([tmp_path / "a.jsonl", tmp_path / "b.json", tmp_path / "c.txt"]))
    assert docs == ["one", "two", "three", "four", "five", "six seven"]
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(OutpaceError, match="--field"):
        list(read_corpus([tmp_path / "d.jsonl"]))
    assert list(read_corpus([tmp_path / "d.jsonl"], field="body")) == ["x"]


# ---------------------------------------------------------------------------- RASD


def test_rasd_prunes_by_the_draft_distribution():
    trie = prefix_trie(np.array([[1, 2], [1, 3], [4, 5], [6, -1]]))
    q0 = np.array([0.0, 0.5, 0.0, 0.0, 0.3, 0.0, 0.2])  # draft probabilities of tokens 0..6
    score = dict(zip(zip(trie.tokens.tolist(), trie.parents.tolist()), prune_scores(trie, q0, top_k=2).tolist()))
    # tokens 1 and 4 are the top-2; 6 is pruned. "1 2" = 0.5 * (1 of the 2 rows through 1).
    assert score == {(1, -1): 0.5, (4, -1): 0.3, (6, -1): -np.inf, (2, 0): 0.25, (3, 0): 0.25, (5, 1): 0.3}


def test_rasd_fusion_by_longest_prefix_matching():
    trie = prefix_trie(np.array([[7, 8, 9], [7, 5, -1], [3, -1, -1]]))
    fused = fuse([7, 8, 4], trie)
    # Chain 7 8 4; retrieval 7 8 9 shares "7 8", 7 5 shares "7", 3 is new. Breadth first, the
    # retrieved children before the drafted one.
    assert list(zip(fused.tokens, fused.parents)) == [(7, -1), (3, -1), (8, 0), (5, 0), (9, 2), (4, 2)]
    assert fused.chain_pos == [0, -1, 1, -1, -1, 2]
    assert fused.retrieved == [True, True, True, True, True, False]
    q = fused_q(fused, torch.tensor([[0.0] * 10] * 2 + [[0.0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0.5]]), vocab=10)
    assert q[0, 7] == 1.0 and q[4, 9] == 1.0
    assert q[5].tolist() == pytest.approx([0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0])  # 9 is a retrieved sibling
    lone = Fused([4], [-1], [0], [False])
    assert fused_q(lone, torch.tensor([[0.25, 0.75]]), 2).tolist() == [[0.25, 0.75]]


# ---------------------------------------------------------------------------- per-step cost


class Spy(list):
    """A context that counts how many of its tokens a drafter reads."""

    touched = 0

    def __getitem__(self, i):  # type: ignore[override]
        self.touched += len(range(*i.indices(len(self)))) if isinstance(i, slice) else 1
        return super().__getitem__(i)

    def __iter__(self):
        self.touched += len(self)
        return super().__iter__()


@pytest.mark.parametrize("make", [
    lambda store: RecyclingDrafter(32),
    lambda store: AdedDrafter(AdedConfig(iterations=5)),
    lambda store: StandDrafter(32),
    lambda store: RestDrafter(ContextRetriever(16)),
    lambda store: RestDrafter(DatastoreRetriever(store)),
    lambda store: PromptLookupDrafter(),
], ids=["recycling", "aded", "stand", "rest-context", "rest-datastore", "prompt-lookup"])
def test_a_draft_step_reads_only_the_tail_of_a_long_context(make):
    rng = np.random.default_rng(0)
    context = rng.integers(0, 32, 8000).tolist()
    drafter = make(Datastore.build([context[:5000]]))
    drafter.start(context)
    for new in ([], [5, 6, 7]):
        context += new
        spy = Spy(context)
        drafter.propose(DraftContext(spy, 8, GREEDY, torch.Generator().manual_seed(0)))
        assert spy.touched <= 64  # of 8000 tokens
