"""The decoding loop on tiny random models (fp32): speculative greedy output equals the
engine's own autoregressive output token for token, for every kind of drafter and for the
rollback paths; stopping, streaming and statistics behave."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, tiny_model

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.base import DraftContext
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter
from outpace.sampling import SamplingConfig
from outpace.tree import build_trie
from outpace.types import Draft

PROMPTS = [
    [1, 2, 3, 4, 5, 1, 2, 3, 7, 8, 9, 1, 2],
    [10, 11, 12, 13, 10, 11, 12, 14, 15, 10, 11],
    [5],
    [40, 41, 42, 43, 44, 45, 46, 47, 40, 41, 42, 43, 40],
]
GREEDY = GenerationConfig(max_new_tokens=40, draft_length=4)


class OracleDrafter:
    """Proposes the known autoregressive continuation: always right (or always wrong)."""

    name = "oracle"

    def __init__(self, reference: list[int], wrong: bool = False, tree: bool = False) -> None:
        self.reference, self.wrong, self.makes_trees = reference, wrong, tree

    def start(self, prompt):
        pass

    def propose(self, ctx: DraftContext) -> Draft:
        n = len(ctx.tokens)
        right = self.reference[n : n + ctx.budget]
        if self.wrong:
            return Draft.chain([(t + 1) % VOCAB for t in right])
        if not self.makes_trees:
            return Draft.chain(right)
        # A wrong branch first at every level, so the accepted path is never the leftmost one.
        decoys = [right[:i] + [(right[i] + 1) % VOCAB] for i in range(len(right))]
        tokens, parents = build_trie(decoys + [right])
        return Draft(torch.tensor(tokens), torch.tensor(parents))

    def observe(self, draft, result, logits):
        pass


def ar_tokens(target, prompt, cfg=GREEDY):
    return Decoder(target, None).generate(prompt, cfg).tokens


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t, d: DraftModelDrafter(d), id="draft-model"),
        pytest.param(lambda t, d: DraftModelDrafter(t), id="self-draft"),
        pytest.param(lambda t, d: PromptLookupDrafter(), id="prompt-lookup"),
        pytest.param(lambda t, d: PromptLookupDrafter(PromptLookupConfig(branches=3)), id="prompt-lookup-tree"),
    ],
)
def test_greedy_speculative_equals_autoregressive(target, draft_backend, prompt, make):
    expected = ar_tokens(target, prompt)
    result = Decoder(target, None, make(target, draft_backend)).generate(prompt, GREEDY)
    assert result.tokens == expected
    assert result.stats.new_tokens == len(expected) == GREEDY.max_new_tokens


@pytest.mark.parametrize("mode", ["right", "wrong", "right-tree"])
def test_oracle_drafters_exercise_accept_and_rollback_paths(target, mode):
    prompt = PROMPTS[0]
    expected = ar_tokens(target, prompt)
    drafter = OracleDrafter(prompt + expected, wrong=mode == "wrong", tree=mode == "right-tree")
    result = Decoder(target, None, drafter).generate(prompt, GREEDY)
    assert result.tokens == expected
    stats = result.stats
    if mode == "wrong":
        assert stats.tau == 1.0 and set(stats.acceptance_by_position) == {0.0}
    else:
        assert stats.steps == 8  # 40 tokens, 4 accepted + 1 bonus per step
        assert stats.acceptance_by_position == [1.0] * 4


class RecordingBackend:
    """The target, with a log of every forward: (number of tokens, parents or None)."""

    def __init__(self, backend) -> None:
        self.backend, self.log = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def forward(self, cache, tokens, parents=None, **kw):
        self.log.append((len(tokens), None if parents is None else parents.tolist()))
        return self.backend.forward(cache, tokens, parents, **kw)


@pytest.mark.parametrize("mode", ["plain", "right", "right-tree", "wrong"])
def test_the_first_step_takes_its_logits_from_the_prefill(target, mode):
    """The prefill forwards the whole prompt, so the first token needs no forward of its own, as
    in llama.cpp's generation: the first step forwards only its draft (a tree's roots attached to
    the cached prompt), or nothing. A repeated prompt recomputes only its last token."""
    prompt, cfg = PROMPTS[0], GenerationConfig(max_new_tokens=12, draft_length=3)
    expected = ar_tokens(target, prompt, cfg)
    drafter = None if mode == "plain" else OracleDrafter(prompt + expected, mode == "wrong", mode == "right-tree")
    recording = RecordingBackend(target)
    decoder = Decoder(recording, None, drafter)
    for cached in (False, True):
        recording.log.clear()
        result = decoder.generate(prompt, cfg)
        assert result.tokens == expected
        sizes = [n for n, _ in recording.log]
        assert sizes[0] == (1 if cached else len(prompt))
        assert result.stats.cached_tokens == (len(prompt) - 1 if cached else 0)
        if mode == "plain":
            assert sizes[1:] == [1] * (cfg.max_new_tokens - 1)
        elif mode == "right-tree":
            first_parents = recording.log[1][1]
            assert first_parents.count(-1) > 1 and sizes[1] == len(first_parents)
        else:
            assert sizes[1] == 3 and recording.log[1][1] is None  # the draft alone: no root token
            assert sizes[2] == 4  # later steps: root + draft


def test_self_drafting_accepts_everything_in_fp32(target):
    result = Decoder(target, None, DraftModelDrafter(target)).generate(PROMPTS[1], GREEDY)
    assert result.stats.acceptance_by_position == [1.0] * 4


def test_qwen2_architecture_too():
    target, draft = tiny_model(seed=2, arch="qwen2"), tiny_model(seed=3, arch="qwen2")
    for drafter in (DraftModelDrafter(draft), PromptLookupDrafter(PromptLookupConfig(branches=2))):
        assert Decoder(target, None, drafter).generate(PROMPTS[0], GREEDY).tokens == ar_tokens(target, PROMPTS[0])


def test_max_new_tokens_is_exact_for_every_draft_length(target, draft_backend):
    for k in (1, 2, 3, 7):
        for n in (1, 2, 5, 9):
            cfg = GenerationConfig(max_new_tokens=n, draft_length=k)
            r = Decoder(target, None, DraftModelDrafter(draft_backend)).generate(PROMPTS[0], cfg)
            assert len(r.tokens) == n and r.finish_reason == "length"


def test_eos_stops_and_is_not_emitted(target):
    expected = ar_tokens(target, PROMPTS[0])
    eos = expected[5]
    first = expected.index(eos)
    r = Decoder(target, None, PromptLookupDrafter(), eos_ids=[eos]).generate(PROMPTS[0], GREEDY)
    assert r.tokens == expected[:first] and r.finish_reason == "eos"
    ignore = GenerationConfig(max_new_tokens=40, ignore_eos=True)
    assert Decoder(target, None, eos_ids=[eos]).generate(PROMPTS[0], ignore).tokens == expected


def test_stop_string_cuts_text_and_stream_matches_generate(target, tokenizer):
    expected = ar_tokens(target, PROMPTS[0])
    words = [f"w{t}" for t in expected]
    stop = " ".join(words[6:8])
    dec = Decoder(target, tokenizer, PromptLookupDrafter())
    cfg = GenerationConfig(max_new_tokens=40, stop=(stop,))
    r = dec.generate(PROMPTS[0], cfg)
    assert r.finish_reason == "stop"
    assert r.text == " ".join(words[:6]) + " "
    chunks = list(dec.stream(PROMPTS[0], cfg))
    assert "".join(c.text for c in chunks) == r.text
    assert chunks[-1].stats is not None and chunks[-1].finish_reason == "stop"
    assert all(c.stats is None for c in chunks[:-1])


def test_text_prompt_through_the_tokenizer(target, tokenizer):
    dec = Decoder(target, tokenizer)
    ids = dec.encode("w1 w2 w3", chat=False)
    assert ids == [1, 2, 3]
    assert dec.generate("w1 w2 w3", GenerationConfig(max_new_tokens=5)).tokens == ar_tokens(
        target, [1, 2, 3], GenerationConfig(max_new_tokens=5)
    )


def test_seeded_sampling_is_deterministic(target, draft_backend):
    cfg = GenerationConfig(max_new_tokens=30, sampling=SamplingConfig(temperature=1.0, seed=7))
    a = Decoder(target, None, DraftModelDrafter(draft_backend)).generate(PROMPTS[0], cfg).tokens
    b = Decoder(target, None, DraftModelDrafter(draft_backend)).generate(PROMPTS[0], cfg).tokens
    other = GenerationConfig(max_new_tokens=30, sampling=SamplingConfig(temperature=1.0, seed=8))
    c = Decoder(target, None, DraftModelDrafter(draft_backend)).generate(PROMPTS[0], other).tokens
    assert a == b and a != c


def test_stats_account_for_every_token_and_second(target, draft_backend):
    r = Decoder(target, None, DraftModelDrafter(draft_backend)).generate(PROMPTS[0], GREEDY)
    s = r.stats
    assert s.new_tokens == len(r.tokens) == sum(s.accepted_lengths) + s.steps
    assert s.tau == pytest.approx(s.new_tokens / s.steps)
    assert all(0.0 <= a <= 1.0 for a in s.acceptance_by_position)
    assert s.prompt_tokens == len(PROMPTS[0])
    assert min(s.prefill_s, s.draft_s, s.verify_s, s.other_s) > 0
    assert s.tokens_per_s > 0
    d = s.as_dict()
    assert set(d["time_s"]) == {"prefill", "draft", "verify", "other", "total"}
