"""The peers' adapters on their own: llama-cpp-ar on a tiny GGUF written in the test, and the
token accounting every peer shares."""

from __future__ import annotations

import pytest

from outpace.bench.methods import LlamaCppMethod, Settings, _finish
from outpace.errors import OutpaceError

W = 259  # first word token of tiny_gguf's vocabulary
EOS = 2


class IdsTokenizer:
    """Decodes ids to their numbers: enough for a tokenizer-free GGUF test."""

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, ids))


def test_finish_cuts_at_eos_without_counting_it_and_names_the_reason() -> None:
    assert _finish([5, 6, EOS, 7], frozenset({EOS}), 10) == ([5, 6], "eos")
    assert _finish([5, 6, 7], frozenset({EOS}), 3) == ([5, 6, 7], "length")
    assert _finish([5, 6, 7, 8], frozenset({EOS}), 3) == ([5, 6, 7], "length")
    assert _finish([5], frozenset({EOS}), 3) == ([5], "stop")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("llama_cpp")
    from tiny_gguf import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "t.gguf", seed=0, n_words=40)


@pytest.mark.parametrize("prompt", [[1, W, W + 1, W + 2, W, W + 1], [1, 40, 41, 42, 40, 41, 43], [1, 100]])
def test_llama_cpp_ar_is_greedy_and_matches_outpaces_llama_cpp_backend(tiny_gguf, prompt) -> None:
    from llama_cpp import Llama

    from outpace.backends.llama_cpp import LlamaCppBackend
    from outpace.decoder import Decoder, GenerationConfig

    llm = Llama(model_path=str(tiny_gguf), n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
    peer = LlamaCppMethod(llm, IdsTokenizer(), [EOS], n_ctx=256)
    first = peer.generate(prompt, Settings(max_new_tokens=24))
    again = peer.generate(prompt, Settings(max_new_tokens=24))  # no state leaks between calls
    reference = Decoder(LlamaCppBackend(tiny_gguf, n_ctx=256, threads=1), None, eos_ids=[EOS]).generate(
        prompt, GenerationConfig(max_new_tokens=24))
    assert first.tokens == again.tokens == tuple(reference.tokens)
    assert len(first.tokens) == 24 or first.finish_reason == "eos"
    assert first.text == " ".join(map(str, first.tokens)) and first.wall_s > 0 and first.steps is None


def test_llama_cpp_ar_refuses_prompts_beyond_its_context(tiny_gguf) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=str(tiny_gguf), n_ctx=64, n_threads=1, verbose=False)
    with pytest.raises(OutpaceError, match="exceeds its context of 64"):
        LlamaCppMethod(llm, IdsTokenizer(), [EOS], n_ctx=64).generate([1] * 60, Settings(max_new_tokens=8))
