"""Weight-only int8/int4 execution: close to the float model, and lossless against itself."""

import pytest
import torch
from conftest import tiny_model

from outpace.backends.quant import Int4Linear, Int8Linear, QuantConfig, quantize_model
from outpace.backends.torch import TorchBackend, parse_quant
from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.draft_model import DraftModelDrafter
from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter
from outpace.errors import OutpaceError

PROMPT = [1, 2, 3, 4, 1, 2, 3, 5, 1, 2]


@pytest.mark.parametrize("scheme,cls,tol", [("int8", Int8Linear, 0.05), ("int4", Int4Linear, 0.5)])
def test_quantized_logits_stay_close(scheme, cls, tol):
    backend = tiny_model(seed=0, dtype=torch.bfloat16)
    ref = backend.forward(backend.new_cache(), torch.tensor(PROMPT)).logits
    quantize_model(backend.model, QuantConfig(scheme, 32))
    assert isinstance(backend.model.lm_head, cls)
    out = backend.forward(backend.new_cache(), torch.tensor(PROMPT)).logits
    assert (out - ref).abs().max() / ref.abs().max() < tol
    rebuilt = TorchBackend(backend.model)  # as load() does: the backend wraps a quantized model
    assert rebuilt.vocab_size == backend.vocab_size


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_speculative_equals_autoregressive_on_a_quantized_target(scheme):
    target = tiny_model(seed=0, dtype=torch.bfloat16)
    draft = tiny_model(seed=1, dtype=torch.bfloat16)
    quantize_model(target.model, QuantConfig(scheme, 32))
    cfg = GenerationConfig(max_new_tokens=30)
    ar = Decoder(target, None).generate(PROMPT, cfg).tokens
    for drafter in (DraftModelDrafter(draft), PromptLookupDrafter(PromptLookupConfig(branches=2))):
        assert Decoder(target, None, drafter).generate(PROMPT, cfg).tokens == ar


def test_quantized_draft_leaves_the_output_unchanged():
    target, draft = tiny_model(seed=0), tiny_model(seed=0, dtype=torch.bfloat16)
    quantize_model(draft.model, QuantConfig("int4", 32))
    cfg = GenerationConfig(max_new_tokens=30)
    assert Decoder(target, None, DraftModelDrafter(draft)).generate(PROMPT, cfg).tokens == Decoder(
        target, None
    ).generate(PROMPT, cfg).tokens


def test_quantization_cache_round_trip(tmp_path):
    a, b = tiny_model(seed=0, dtype=torch.bfloat16), tiny_model(seed=0, dtype=torch.bfloat16)
    file = tmp_path / "q.safetensors"
    quantize_model(a.model, QuantConfig("int4", 32), file)
    assert file.exists()
    quantize_model(b.model, QuantConfig("int4", 32), file)  # loads instead of quantizing
    x = torch.tensor(PROMPT)
    torch.testing.assert_close(a.forward(a.new_cache(), x).logits, b.forward(b.new_cache(), x).logits)


@pytest.mark.parametrize("bad", ["int3", "fp8", "int4g7"])
def test_bad_quantization_names(bad):
    with pytest.raises(OutpaceError):
        parse_quant(bad)
    assert parse_quant("int4g64") == QuantConfig("int4", 64) and parse_quant(None) is None
