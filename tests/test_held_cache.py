"""The KV cache kept across generations: only what is missing is computed, and reuse changes
no output (greedy, fp32: token for token equal to a fresh decoder's)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_model

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.base import DraftContext
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.drafters.draft_tree import DySpec, TreeDrafter
from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter
from outpace.held_cache import HeldCache
from outpace.types import Draft

GREEDY = GenerationConfig(max_new_tokens=24, draft_length=4)
PROMPT = [1, 2, 3, 4, 5, 1, 2, 3, 7, 8, 9, 1, 2]


class Counting:
    """A backend proxy that counts the tokens forwarded through it."""

    def __init__(self, inner, rollback: bool = True) -> None:
        self.inner, self.fed = inner, 0
        self.capabilities = dataclasses.replace(inner.capabilities, rollback=rollback)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, cache, tokens, *args, **kwargs):
        self.fed += len(tokens)
        return self.inner.forward(cache, tokens, *args, **kwargs)


def fresh_logits(backend, tokens):  # [vocab] after the last token, from an empty cache
    return backend.forward(backend.new_cache(), torch.tensor(tokens)).logits[-1]


def test_hold_forwards_only_what_the_cache_lacks(target):
    b = Counting(target)
    held = HeldCache(b)
    assert held.hold(list(range(10))) is not None and (b.fed, held.reused) == (10, 0)
    logits = held.hold(list(range(12)))  # an extension: 2 new tokens
    assert (b.fed, held.reused) == (12, 10)
    torch.testing.assert_close(logits, fresh_logits(target, list(range(12))), atol=1e-5, rtol=1e-5)
    logits = held.hold([0, 1, 2, 3, 4, 40])  # diverges after 5: roll back, feed 1
    assert (b.fed, held.reused, held.tokens) == (13, 5, [0, 1, 2, 3, 4, 40])
    assert target.cache_len(held.cache) == 6
    torch.testing.assert_close(logits, fresh_logits(target, [0, 1, 2, 3, 4, 40]), atol=1e-5, rtol=1e-5)
    assert held.hold([0, 1, 2, 3, 4, 40]) is None and b.fed == 13  # all cached: nothing to do
    assert held.hold([0, 1, 2, 3, 4, 40], min_new=1) is not None and b.fed == 14  # logits asked for


def test_entries_beyond_the_recorded_tokens_are_dropped_by_the_next_hold(target):
    held = HeldCache(target)
    held.hold([5, 6, 7])
    target.forward(held.cache, torch.tensor([8, 9, 10]))  # e.g. a verification step
    target.keep(held.cache, 3, [0, 1])  # accepted 8, 9
    held.extended([8, 9, 10, 11])
    assert held.tokens == [5, 6, 7, 8, 9]
    target.forward(held.cache, torch.tensor([30]))  # not recorded
    logits = held.hold([5, 6, 7, 8, 9, 12])
    assert target.cache_len(held.cache) == 6 and held.reused == 5
    torch.testing.assert_close(logits, fresh_logits(target, [5, 6, 7, 8, 9, 12]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="grew by"):
        target.forward(held.cache, torch.tensor([1, 2]))
        held.extended([1])


def test_without_rollback_only_a_pure_extension_is_reused(target):
    b = Counting(target, rollback=False)
    held = HeldCache(b)
    held.hold([1, 2, 3])
    held.hold([1, 2, 3, 4])
    assert (b.fed, held.reused) == (4, 3)
    held.hold([1, 2, 9])  # would need a rollback: a new cache instead
    assert (b.fed, held.reused, held.tokens) == (7, 0, [1, 2, 9])


DRAFTERS = {
    "ar": lambda d: None,
    "draft-model": lambda d: DraftModelDrafter(d),
    "prompt-lookup-tree": lambda d: PromptLookupDrafter(PromptLookupConfig(branches=3)),
    "dyspec": lambda d: TreeDrafter(d, DySpec()),
}


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_a_second_chat_turn_reuses_the_cache_and_equals_a_fresh_run(target, draft_backend, name):
    answer = Decoder(target, None).generate(PROMPT, GREEDY).tokens
    turn2 = PROMPT + answer + [20, 21, 22]
    expected = Decoder(target, None).generate(turn2, GREEDY).tokens
    decoder = Decoder(target, None, DRAFTERS[name](draft_backend))
    first = decoder.generate(PROMPT, GREEDY)
    assert first.tokens == answer and first.stats.cached_tokens == 0
    second = decoder.generate(turn2, GREEDY)
    # the cache held the prompt and every emitted token but the last (never fed back)
    assert second.stats.cached_tokens >= len(PROMPT) + len(answer) - 1
    assert second.stats.as_dict()["cached_tokens"] == second.stats.cached_tokens
    assert second.tokens == expected
    again = decoder.generate(PROMPT, GREEDY)  # back to the first prompt: a shorter prefix
    assert again.tokens == answer and again.stats.cached_tokens == len(PROMPT) - 1
    fresh = decoder.generate(turn2, dataclasses.replace(GREEDY, cache_prompt=False))
    assert fresh.tokens == expected and fresh.stats.cached_tokens == 0


class FailsOnThirdStep:
    name, makes_trees = "fails", False

    def __init__(self) -> None:
        self.calls = 0

    def start(self, prompt):
        self.calls = 0

    def propose(self, ctx: DraftContext) -> Draft:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("drafter failed")
        return Draft.chain([1, 2])

    def observe(self, draft, result, logits):
        pass


def test_a_failed_or_abandoned_generation_leaves_the_next_one_exact(target):
    expected = Decoder(target, None).generate(PROMPT, GREEDY).tokens
    decoder = Decoder(target, None, FailsOnThirdStep())
    with pytest.raises(RuntimeError, match="drafter failed"):
        decoder.generate(PROMPT, GREEDY)
    assert decoder._held.cache is None  # dropped: its contents were unknown
    ar = Decoder(target, None)
    stream = ar.stream_ids(PROMPT, GREEDY)
    next(stream), next(stream)
    stream.close()  # a client that went away between two steps
    assert ar.generate(PROMPT, GREEDY).tokens == expected
    ok = Decoder(target, None, DraftModelDrafter(tiny_model(seed=1)))
    assert ok.generate(PROMPT, GREEDY).tokens == expected



def test_one_parked_cache_per_backend_interleaved_decoders_pay_their_own_prefill(target):
    a, b = Decoder(target, None), Decoder(target, None)
    first = a.generate(PROMPT, GREEDY)
    turn2 = PROMPT + first.tokens + [20, 21]
    b.generate([3, 4, 5], GREEDY)  # another decoder on the same backend: a's cache gives way
    assert a._held.cache is None and b._held.cache is not None
    second = a.generate(turn2, GREEDY)
    assert second.stats.cached_tokens == 0 and b._held.cache is None
    assert second.tokens == Decoder(target, None).generate(turn2, GREEDY).tokens
