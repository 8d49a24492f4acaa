"""Bad input gets a clear OutpaceError (or exit code 2 from the CLI) and loses nothing."""

from __future__ import annotations

import pytest
from conftest import word_tokenizer

from outpace.backends.torch import LoadedModel
from outpace.cli import main
from outpace.decoder import Decoder, GenerationConfig
from outpace.drafters.draft_model import check_same_tokenizer
from outpace.engine import EngineSpec, build, make_drafter
from outpace.errors import OutpaceError


def test_empty_prompts(target, tokenizer):
    dec = Decoder(target, tokenizer)
    cfg = GenerationConfig(max_new_tokens=4)
    with pytest.raises(OutpaceError, match="prompt is empty"):
        dec.generate("", cfg)
    with pytest.raises(OutpaceError, match="prompt is empty"):
        dec.generate("   \n", cfg)
    with pytest.raises(OutpaceError, match="prompt is empty"):
        dec.generate([], cfg)
    with pytest.raises(OutpaceError, match="no message with content"):
        dec.encode([{"role": "user", "content": "  "}])


@pytest.mark.parametrize("kwargs,match", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -3}, "max_new_tokens"),
    ({"draft_length": -1}, "draft_length"),
    ({"stop": "x"}, "stop"),
])
def test_bad_generation_settings(kwargs, match):
    with pytest.raises(OutpaceError, match=match):
        GenerationConfig(**kwargs)


def test_context_longer_than_the_model_allows(target):
    dec = Decoder(target, None)
    with pytest.raises(OutpaceError, match="context window of 256"):
        dec.generate(list(range(5)) * 50, GenerationConfig(max_new_tokens=10))


def test_token_ids_outside_the_vocabulary(target):
    with pytest.raises(OutpaceError, match="outside the vocabulary"):
        Decoder(target, None).generate([1, 2, 999], GenerationConfig(max_new_tokens=2))


def test_draft_and_target_tokenizers_that_differ():
    with pytest.raises(OutpaceError, match="different tokenizers"):
        check_same_tokenizer(word_tokenizer(48), word_tokenizer(40), "big", "small")
    check_same_tokenizer(word_tokenizer(48), word_tokenizer(48), "big", "small")  # no error


def test_engine_refuses_a_draft_model_with_another_tokenizer(target, draft_backend):
    models = {
        "t": LoadedModel(target, word_tokenizer(48), "t", ()),
        "d": LoadedModel(draft_backend, word_tokenizer(30), "d", ()),
    }
    with pytest.raises(OutpaceError, match="different tokenizers"):
        build(EngineSpec("t", "draft-model:d", "float32"), loader=lambda name, dtype, quant=None: models[name])


@pytest.mark.parametrize("spec,match", [
    ("draft-model", "needs a model"),
    ("lookahead", "unknown drafter"),
    ("prompt-lookup:max_ngram", "bad drafter option"),
    ("prompt-lookup:colour=3", "bad drafter option"),
    ("prompt-lookup:max_ngram=x", "needs a int"),
    ("prompt-lookup:min_ngram=4,max_ngram=2", "min_ngram <= max_ngram"),
])
def test_bad_drafter_specs(target, spec, match):
    loaded = LoadedModel(target, word_tokenizer(48), "t", ())
    with pytest.raises(OutpaceError, match=match):
        make_drafter(spec, loaded, "float32", loader=lambda n, d, q=None: loaded)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(OutpaceError, match="no such model file"):
        build(EngineSpec(str(tmp_path / "nope.gguf"), "none", "float32"))


@pytest.mark.parametrize("argv,match", [
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--top-p", "0"], "top_p must be in"),
    (["--top-p", "1.5"], "top_p must be in"),
    (["--max-new-tokens", "0"], "max_new_tokens must be a positive"),
    (["--target", "/no/such/model.gguf"], "no such model file"),
    (["--target", "not-a-model"], "not-a-model"),
])
def test_cli_reports_bad_input_without_a_traceback(argv, match, capsys):
    assert main(["generate", "--prompt", "hi", "--drafter", "none", *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_torch_quantization_on_the_llama_cpp_backend_is_refused_clearly() -> None:
    from outpace.engine import EngineSpec, load_cached

    with pytest.raises(OutpaceError, match="applies to the torch backend.*outpace models quantize"):
        EngineSpec("qwen2.5-coder-1.5b", backend="llama.cpp", quant="int4")
    with pytest.raises(OutpaceError, match="quant=int4 applies to torch models"):
        load_cached("any.gguf", "float32", "int4", backend="llama.cpp")  # a draft model's quant= on llama.cpp
