"""The model-free drafters on a real model: SmolLM2-135M-Instruct in fp32, greedy, 48 tokens, two
chats; every drafter's output equals autoregressive decoding token for token. The REST and ADED
corpora are the Spec-Bench questions shipped with outpace, tokenized with SmolLM2's tokenizer.
Slow: run with `pytest -m slow tests/test_drafters_smollm2.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMOLLM2_CHATS

import outpace
from outpace.datastore import Datastore, read_corpus, tokenize, tokenizer_fingerprint
from outpace.decoder import Decoder, GenerationConfig
from outpace.engine import load_cached, make_drafter

pytestmark = pytest.mark.slow

CHATS = SMOLLM2_CHATS
CFG = GenerationConfig(max_new_tokens=48, draft_length=12)


@pytest.fixture(scope="module")
def reference(smollm2):
    dec = Decoder(smollm2.backend, smollm2.tokenizer, None, smollm2.eos_ids)
    return {c: dec.generate([{"role": "user", "content": c}], CFG) for c in CHATS}


@pytest.fixture(scope="module")
def spec_bench_store(smollm2, tmp_path_factory):
    questions = Path(outpace.__file__).parent / "data" / "spec_bench" / "question.jsonl"
    store = Datastore.build(tokenize(smollm2.tokenizer, read_corpus([questions])), tokenizer="smollm2-135m",
                            fingerprint=tokenizer_fingerprint(smollm2.tokenizer), vocab_size=len(smollm2.tokenizer))
    path = tmp_path_factory.mktemp("ds") / "spec_bench.bin"
    store.save(path)
    return path


@pytest.mark.parametrize("spec", [
    "recycling", "aded", "aded:{store}", "stand", "rest", "rest:{store}",
    "rasd:draft=smollm2-135m", "rasd:draft=smollm2-135m,datastore={store}",
])
def test_greedy_equals_autoregressive_on_smollm2(smollm2, reference, spec_bench_store, spec):
    drafter = make_drafter(spec.format(store=spec_bench_store), smollm2, "float32",
                           lambda name, dtype, quant=None: load_cached(name, dtype))
    dec = Decoder(smollm2.backend, smollm2.tokenizer, drafter, smollm2.eos_ids)
    for chat in CHATS:
        result = dec.generate([{"role": "user", "content": chat}], CFG)
        assert result.tokens == reference[chat].tokens
        assert result.text == reference[chat].text


def test_recycling_state_stays_under_two_megabytes(smollm2, reference):
    drafter = make_drafter("recycling", smollm2, "float32", lambda *a: None)
    dec = Decoder(smollm2.backend, smollm2.tokenizer, drafter, smollm2.eos_ids)
    dec.generate([{"role": "user", "content": CHATS[0]}], CFG)
    assert drafter.adj.nbytes < 2 * 2**20
