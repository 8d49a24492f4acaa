"""Greedy speculative output of every model-free drafter equals the engine's autoregressive output
token for token on tiny random fp32 models (the pattern of test_decoder.py), and the drafter
specs of `outpace.engine` build them, with clear errors for bad specs."""

from __future__ import annotations

import pytest
from conftest import VOCAB, tiny_model, word_tokenizer

from outpace.backends.torch import LoadedModel
from outpace.datastore import Datastore, tokenizer_fingerprint
from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.aded import AdedConfig, AdedDrafter
from outpace.drafters.rasd import RasdConfig, RasdDrafter
from outpace.drafters.recycling import RecyclingDrafter
from outpace.drafters.rest import ContextRetriever, DatastoreRetriever, RestDrafter
from outpace.drafters.stand import StandDrafter
from outpace.engine import make_drafter
from outpace.errors import OutpaceError

PROMPTS = [
    [1, 2, 3, 4, 5, 1, 2, 3, 7, 8, 9, 1, 2],
    [10, 11, 12, 13, 10, 11, 12, 14, 15, 10, 11],
    [5],
    [40, 41, 42, 43, 44, 45, 46, 47, 40, 41, 42, 43, 40],
]
GREEDY = GenerationConfig(max_new_tokens=40, draft_length=8)


@pytest.fixture(scope="module")
def reference(target):
    return {tuple(p): Decoder(target, None).generate(p, GREEDY).tokens for p in PROMPTS}


@pytest.fixture(scope="module")
def store(reference):
    """A corpus holding the continuations of two prompts, so retrieval really hits."""
    return Datastore.build([PROMPTS[0] + reference[tuple(PROMPTS[0])], PROMPTS[3] + reference[tuple(PROMPTS[3])],
                            list(range(VOCAB))])


MAKERS = {
    "recycling": lambda d, s: RecyclingDrafter(VOCAB),
    "aded": lambda d, s: AdedDrafter(AdedConfig(iterations=40)),
    "aded-corpus": lambda d, s: AdedDrafter(AdedConfig(iterations=40), corpus=s.tokens),
    "stand": lambda d, s: StandDrafter(VOCAB),
    "rest-context": lambda d, s: RestDrafter(ContextRetriever(16)),
    "rest-datastore": lambda d, s: RestDrafter(DatastoreRetriever(s)),
    "rasd": lambda d, s: RasdDrafter(d, ContextRetriever(16)),
}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_greedy_equals_autoregressive(target, draft_backend, reference, store, kind):
    drafter = MAKERS[kind](draft_backend, store)  # one drafter for every prompt: state carries over
    for prompt in PROMPTS:
        result = Decoder(target, None, drafter).generate(prompt, GREEDY)
        assert result.tokens == reference[tuple(prompt)]
        assert result.stats.new_tokens == GREEDY.max_new_tokens
        assert result.stats.drafter_state_bytes > 0  # every model-free drafter reports its tables


def test_retrieval_from_a_corpus_that_holds_the_answer_accepts_long_drafts(target, draft_backend, reference, store):
    # RASD's pruning keeps retrieved sequences whose first token is in the draft model's top-k:
    # the random tiny draft model knows nothing, so let every first token through (top_k=VOCAB).
    unpruned = RasdConfig(top_k=VOCAB)
    rasd = RasdDrafter(draft_backend, DatastoreRetriever(store), unpruned)
    for drafter in (RestDrafter(DatastoreRetriever(store)), rasd):
        for prompt in (PROMPTS[0], PROMPTS[2]):  # in the corpus, and not
            result = Decoder(target, None, drafter).generate(prompt, GREEDY)
            assert result.tokens == reference[tuple(prompt)]
        assert Decoder(target, None, drafter).generate(PROMPTS[0], GREEDY).stats.tau > 3.0


def test_stand_learns_across_samples_of_one_prompt(target):
    drafter = StandDrafter(VOCAB)  # best-of-N: the n-gram module and the tree shape carry over
    taus = [Decoder(target, None, drafter).generate(PROMPTS[1], GREEDY).stats.tau for _ in range(5)]
    assert taus == sorted(taus) and taus[-1] > 3 * taus[0]


@pytest.mark.parametrize("kind", ["recycling", "stand", "rest-context", "rasd"])
def test_every_budget_gives_exact_lengths_and_the_same_tokens(target, draft_backend, reference, store, kind):
    for k in (1, 2, 5, 16):
        cfg = GenerationConfig(max_new_tokens=9, draft_length=k)
        r = Decoder(target, None, MAKERS[kind](draft_backend, store)).generate(PROMPTS[0], cfg)
        assert r.tokens == reference[tuple(PROMPTS[0])][:9]


def test_qwen2_architecture_too():
    target, draft = tiny_model(seed=2, arch="qwen2"), tiny_model(seed=3, arch="qwen2")
    expected = Decoder(target, None).generate(PROMPTS[0], GREEDY).tokens
    for drafter in (RecyclingDrafter(VOCAB), StandDrafter(VOCAB), RasdDrafter(draft, ContextRetriever(16))):
        assert Decoder(target, None, drafter).generate(PROMPTS[0], GREEDY).tokens == expected


# ---------------------------------------------------------------------------- engine specs


@pytest.fixture(scope="module")
def loaded(target):
    return LoadedModel(target, word_tokenizer(VOCAB), "qwen2.5-tiny", ())


def test_specs_build_each_drafter(loaded, draft_backend, store, tmp_path):
    path = tmp_path / "ds.bin"
    Datastore.build([list(store.tokens[store.tokens >= 0])], tokenizer="t",
                    fingerprint=tokenizer_fingerprint(loaded.tokenizer)).save(path)
    draft = LoadedModel(draft_backend, word_tokenizer(VOCAB), "qwen2.5-coder-0.5b", ())
    models = {"qwen2.5-coder-0.5b": draft, "other": draft}

    def loader(name, dtype, quant=None):
        return models[name]

    cases = {
        "recycling": "recycling", "recycling:k=4,decay=0.3": "recycling", "aded": "aded",
        f"aded:{path}": "aded", "stand:max_n=3,share=always": "stand", "rest": "rest", f"rest:{path}": "rest",
        f"rest:datastore={path},max_span=8": "rest", "rasd": "rasd", f"rasd:draft=other,datastore={path}": "rasd",
    }
    for spec, name in cases.items():
        drafter = make_drafter(spec, loaded, "float32", loader)
        assert drafter.name == name and drafter.makes_trees, spec
    assert make_drafter("recycling:k=4", loaded, "float32", loader).config.k == 4
    assert isinstance(make_drafter(f"rest:{path}", loaded, "float32", loader).retriever, DatastoreRetriever)
    assert isinstance(make_drafter("rest", loaded, "float32", loader).retriever, ContextRetriever)


def test_rasd_runs_its_default_draft_int4_on_torch_only(loaded, draft_backend):
    """int4 is a torch quantization: a llama.cpp target's default draft runs its GGUF weights."""
    asked = []

    def loader(name, dtype, quant=None):
        asked.append(quant)
        return LoadedModel(draft_backend, word_tokenizer(VOCAB), name, ())

    class NotTorch:  # stands for a llama.cpp backend: any backend that is not TorchBackend
        vocab_size = draft_backend.vocab_size

    make_drafter("rasd", loaded, "float32", loader)
    make_drafter("rasd", LoadedModel(NotTorch(), loaded.tokenizer, "qwen2.5-coder-1.5b@llama.cpp", ()), "float32", loader)
    assert asked == ["int4", None]


@pytest.mark.parametrize("spec,match", [
    ("recycling:k=99", "must be in 1..64"),
    ("recycling:colour=3", "bad drafter option"),
    ("stand:share=sometimes", "share must be one of"),
    ("stand:min_n=3,max_n=2", "min_n <= max_n"),
    ("aded:iterations=0", "positive integer"),
    ("rest:/no/such/datastore.bin", "cannot read datastore"),
    ("rest:max_span=1,min_span=2", "min_span <= max_span"),
    ("rasd:top_k=0", "top_k must be a positive"),
])
def test_bad_specs_are_clear_errors(loaded, draft_backend, spec, match):
    draft = LoadedModel(draft_backend, word_tokenizer(VOCAB), "d", ())
    with pytest.raises(OutpaceError, match=match):
        make_drafter(spec, loaded, "float32", lambda name, dtype, quant=None: draft)


def test_rasd_without_a_draft_for_a_non_qwen_target_says_what_it_needs(target):
    other = LoadedModel(target, word_tokenizer(VOCAB), "llama-tiny", ())
    with pytest.raises(OutpaceError, match="rasd:draft=MODEL"):
        make_drafter("rasd", other, "float32", lambda *a: None)


def test_a_datastore_from_another_tokenizer_is_refused(loaded, tmp_path):
    path = tmp_path / "other.bin"
    Datastore.build([[1, 2, 3]], tokenizer="elsewhere", fingerprint="0123456789abcdef").save(path)
    with pytest.raises(OutpaceError, match="rebuild it"):
        make_drafter(f"rest:{path}", loaded, "float32", lambda *a: None)
    Datastore.build([[1, 2, VOCAB + 5]]).save(path)
    with pytest.raises(OutpaceError, match="beyond"):
        make_drafter(f"rest:{path}", loaded, "float32", lambda *a: None)
