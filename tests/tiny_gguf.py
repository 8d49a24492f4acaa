"""Write a tiny random llama-architecture GGUF file (F32) with the `gguf` package, for tests of
the llama.cpp backend. Token ids: 0-2 special, 3-258 bytes, 259+ words."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_gguf(
    path: Path, seed: int = 0, n_words: int = 8, hidden: int = 32, layers: int = 2, ff: int = 64,
    heads: int = 4, kv_heads: int = 2, scale: float = 0.3, ctx: int = 256,
) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [f"\u2581w{i}" for i in range(n_words)]
    types = [2, 3, 3] + [6] * 256 + [1] * n_words
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    kv_dim = hidden // heads * kv_heads
    w.add_tensor("token_embd.weight", rand(vocab, hidden))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(kv_dim, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(kv_dim, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(ff, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(ff, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(hidden, ff))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output.weight", rand(vocab, hidden))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
