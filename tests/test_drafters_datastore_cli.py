"""`outpace datastore build|info` end to end: a tiny model directory (weights + word-level
tokenizer) as the target, a JSONL corpus, the datastore file, and `--drafter rest:FILE` through
`outpace.engine.build` decoding exactly like autoregressive decoding."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import VOCAB, word_tokenizer

from outpace import datastore_cli
from outpace.datastore import Datastore, tokenizer_fingerprint
from outpace.decoder import Decoder, GenerationConfig
from outpace.engine import EngineSpec, build
from outpace.errors import OutpaceError


def run(argv: list[str]) -> int:
    """Parse and run like `outpace` would with this module plugged in."""
    parser = argparse.ArgumentParser(prog="outpace")
    datastore_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, target):
    where = tmp_path_factory.mktemp("tiny")
    target.model.save_pretrained(where)
    word_tokenizer(VOCAB).save_pretrained(where)
    return where


def test_build_info_and_decode_with_the_datastore(model_dir, target, tmp_path, capsys):
    prompt = [1, 2, 3, 4, 5, 1, 2, 3]
    expected = Decoder(target, None).generate(prompt, GenerationConfig(max_new_tokens=30)).tokens
    words = " ".join(f"w{t}" for t in prompt + expected)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": words}) + "\n" + json.dumps({"turns": ["w7 w8 w9", "w1 w2"]}) + "\n")
    out = tmp_path / "ds.bin"
    assert run(["datastore", "build", str(corpus), "--target", str(model_dir), "--out", str(out)]) == 0
    store = Datastore.load(out)
    assert store.meta.documents == 3 and store.tokens.tolist()[: len(prompt)] == prompt
    assert store.meta.fingerprint == tokenizer_fingerprint(word_tokenizer(VOCAB))
    assert "documents" in capsys.readouterr().err
    assert run(["datastore", "info", str(out)]) == 0
    assert "3 documents" in capsys.readouterr().out

    engine = build(EngineSpec(str(model_dir), f"rest:{out}", "float32", cost_profile=False))
    cfg = GenerationConfig(max_new_tokens=30, draft_length=8)
    result = engine.decoder.generate(prompt, cfg)
    assert result.tokens == Decoder(engine.target.backend, None).generate(prompt, cfg).tokens
    assert result.stats.tau > 3.0  # the corpus holds the answer


def test_build_errors_are_clear(model_dir, tmp_path):
    with pytest.raises(OutpaceError, match="cannot read corpus file"):
        run(["datastore", "build", str(tmp_path / "missing.txt"), "--target", str(model_dir), "--out", "x"])
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(OutpaceError, match="not valid JSON"):
        run(["datastore", "build", str(tmp_path / "bad.jsonl"), "--target", str(model_dir), "--out", "x"])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(OutpaceError, match="no tokens"):
        run(["datastore", "build", str(tmp_path / "empty.txt"), "--target", str(model_dir), "--out", "x"])
    with pytest.raises(OutpaceError, match="sort-depth"):
        run(["datastore", "build", str(tmp_path / "empty.txt"), "--target", str(model_dir), "--out", "x",
             "--sort-depth", "0"])
    assert run(["datastore"]) == 2  # no subcommand: usage
