"""The llama.cpp backend, on llama-cpp-python's low-level API (an optional extra:
`pip install -e ".[llama]"`).

One llama.cpp context holds one unified KV memory shared by sequences. Each outpace cache is
a sequence id; a token tree is decoded in one batch in which every node belongs to the
sequences of the leaves below it (llama.cpp lets a token sit in several sequences), and
compaction copies the accepted path into the cache's sequence and drops the scratch ones.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from outpace.backends.base import Capabilities, ForwardOutput
from outpace.errors import OutpaceError
from outpace.tree import depths


def _lib() -> Any:
    try:
        import llama_cpp
        import llama_cpp._logger
    except ImportError:
        raise OutpaceError(
            "the llama.cpp backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36' "
            "(or the project's [llama] extra)"
        ) from None
    llama_cpp._logger.set_verbose(False)  # llama.cpp logs every tensor at load otherwise
    return llama_cpp


@dataclass
class LlamaCache:
    """A sequence in the shared KV memory. `tree`: scratch state between a tree forward and keep()."""

    seq: int
    length: int = 0
    tree: tuple[int, list[int], list[int], list[int]] | None = None  # (start, scratch seqs, leaf seq of each node, parents)


@dataclass
class _SeqPool:
    free: list[int] = field(default_factory=list)

    def take(self) -> int:
        if not self.free:
            raise OutpaceError("llama.cpp backend: out of sequences (too many caches or tree leaves)")
        return self.free.pop()


class LlamaCppBackend:
    """A GGUF model run by llama.cpp behind the `Backend` protocol."""

    capabilities = Capabilities(trees=True, hidden_states=False, rollback=True)

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        n_batch: int = 512,
        n_ubatch: int = 128,
        n_seq_max: int = 64,
        flash_attn: bool | None = None,
        name: str | None = None,
    ) -> None:
        lib = self._lib = _lib()
        path = Path(model_path)
        if not path.is_file():
            raise OutpaceError(f"no such model file: {path}")
        lib.llama_backend_init()
        mparams = lib.llama_model_default_params()
        self._model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise OutpaceError(f"llama.cpp could not load {path}")
        cparams = lib.llama_context_default_params()
        threads = threads or os.cpu_count() or 1
        train_ctx = lib.llama_model_n_ctx_train(self._model)
        cparams.n_ctx = min(n_ctx, train_ctx) if train_ctx > 0 else n_ctx
        # n_batch bounds a tree's size; llama.cpp computes in micro-batches of n_ubatch. 128
        # measured best on 2 cores (benchmarks/results/cost-curves.json: prefill of 512 tokens
        # 10.3 s against 13.1 s with 512, one token 85 against 101 ms).
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(n_ubatch, n_batch)
        cparams.n_seq_max = n_seq_max
        cparams.kv_unified = True
        cparams.swa_full = True  # sliding-window models keep every position, so rollback works
        cparams.n_threads = cparams.n_threads_batch = threads
        if flash_attn is not None:  # None: llama.cpp decides (on where the device supports it)
            cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise OutpaceError(f"llama.cpp could not create a context for {path}")
        self._mem = lib.llama_get_memory(self._ctx)
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.vocab_size = int(lib.llama_vocab_n_tokens(self._vocab))
        self.max_context = int(lib.llama_n_ctx(self._ctx))
        self.n_batch = n_batch
        self._batch = lib.llama_batch_init(n_batch, 0, n_seq_max)
        self._pool = _SeqPool(list(range(n_seq_max - 1, -1, -1)))
        self.name = name or path.name
        self.path = path
        weakref.finalize(self, _free, lib, self._model, self._ctx, self._batch)

    def eog_ids(self) -> tuple[int, ...]:
        """Tokens llama.cpp treats as end of generation."""
        return tuple(t for t in range(self.vocab_size) if self._lib.llama_vocab_is_eog(self._vocab, t))

    # ----------------------------------------------------------------- caches

    def new_cache(self) -> LlamaCache:
        cache = LlamaCache(self._pool.take())
        self._lib.llama_memory_seq_rm(self._mem, cache.seq, -1, -1)
        weakref.finalize(cache, self._release, cache.seq)
        return cache

    def _release(self, seq: int) -> None:
        if self._ctx:
            self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._pool.free.append(seq)

    def cache_len(self, cache: LlamaCache) -> int:
        return cache.length

    def rollback(self, cache: LlamaCache, length: int) -> None:
        """Keep the first `length` entries. After a tree forward, the tree nodes kept must be a
        chain from its root (node i's parent is node i - 1), as on the torch backend."""
        if length > cache.length:
            raise ValueError(f"cannot roll back a cache of {cache.length} to {length}")
        if cache.tree is not None and length > cache.tree[0]:
            start, parents = cache.tree[0], cache.tree[3]
            rows = list(range(length - start))
            if any(parents[i] != i - 1 for i in rows):
                raise ValueError("rollback into a tree forward must keep a chain from its root; use keep()")
            self.keep(cache, start, rows)
            return
        self._drop_tree(cache)
        self._lib.llama_memory_seq_rm(self._mem, cache.seq, length, -1)
        cache.length = length

    def keep(self, cache: LlamaCache, start: int, rows: Sequence[int]) -> None:
        rows = list(rows)
        if cache.tree is None:
            if rows != list(range(len(rows))):
                raise ValueError("keep() with non-prefix rows needs a preceding tree forward")
            self.rollback(cache, start + len(rows))
            return
        tree_start, _, leaf_seq, _ = cache.tree
        if tree_start < start:
            raise ValueError(f"keep() start {start} is inside the tree forward at {tree_start}")
        if tree_start > start:  # rows before the tree are in the sequence already: a prefix of them
            before = tree_start - start
            head = [r for r in rows if r < before]
            if head != list(range(len(head))) or (len(head) < before and len(rows) > len(head)):
                raise ValueError("keep() rows must be a path: the entries before the tree forward, then tree rows")
            if len(head) < before:
                self.rollback(cache, start + len(head))
                return
            start, rows = tree_start, [r - before for r in rows[len(head):]]
        if rows:
            # The accepted rows are a root-to-node path: positions start .. start+len-1 of the
            # sequence of any leaf below the last row hold exactly those nodes.
            src = leaf_seq[rows[-1]]
            self._lib.llama_memory_seq_cp(self._mem, src, cache.seq, start, start + len(rows))
        self._drop_tree(cache)
        cache.length = start + len(rows)

    def _drop_tree(self, cache: LlamaCache) -> None:
        if cache.tree is not None:
            for seq in cache.tree[1]:
                self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
                self._pool.free.append(seq)
            cache.tree = None

    # ----------------------------------------------------------------- forward

    def forward(
        self,
        cache: LlamaCache,
        tokens: torch.Tensor,  # [n] int64
        parents: torch.Tensor | None = None,  # [n] int64
        hidden_layers: Sequence[int] = (),
        last_only: bool = False,
    ) -> ForwardOutput:
        if hidden_layers:
            raise OutpaceError("the llama.cpp backend cannot return hidden states")
        if cache.tree is not None:
            raise ValueError("call keep() after a tree forward before the next forward")
        n = int(tokens.shape[0])
        start = cache.length
        if start + n > self.max_context:
            raise OutpaceError(f"context of {start + n} tokens exceeds {self.name}'s limit of {self.max_context}")
        ids = tokens.tolist()
        if parents is None:
            rows = []
            for lo in range(0, n, self.n_batch):
                hi = min(n, lo + self.n_batch)
                want = [(not last_only) or i == n - 1 for i in range(lo, hi)]
                seqs = [[cache.seq]] * (hi - lo)
                rows.append(self._decode(ids[lo:hi], list(range(start + lo, start + hi)), seqs, want))
            cache.length = start + n
            return ForwardOutput(torch.from_numpy(np.concatenate(rows)))
        if n > self.n_batch:
            raise OutpaceError(f"a tree of {n} nodes exceeds the batch size {self.n_batch}")
        seqs, scratch, leaf_seq = self._tree_seqs(cache, parents)
        positions = (start + depths(parents) - 1).tolist()
        logits = self._decode(ids, positions, seqs, [True] * n)
        cache.tree = (start, scratch, leaf_seq, parents.tolist())
        cache.length = start + n
        return ForwardOutput(torch.from_numpy(logits))

    def _tree_seqs(self, cache: LlamaCache, parents: torch.Tensor) -> tuple[list[list[int]], list[int], list[int]]:
        """A scratch sequence per leaf (holding the cache's prefix); each node's sequences are
        those of the leaves below it; leaf_seq[i] is one sequence that contains node i."""
        par = parents.tolist()
        n = len(par)
        is_leaf = [True] * n
        for p in par:
            if p >= 0:
                is_leaf[p] = False
        seqs: list[list[int]] = [[] for _ in range(n)]
        scratch = []
        for leaf in (i for i in range(n) if is_leaf[i]):
            seq = self._pool.take()
            scratch.append(seq)
            self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
            self._lib.llama_memory_seq_cp(self._mem, cache.seq, seq, -1, -1)
            node = leaf
            while node >= 0:
                seqs[node].append(seq)
                node = par[node]
        return seqs, scratch, [s[0] for s in seqs]

    def _decode(self, ids: list[int], pos: list[int], seqs: list[list[int]], want: list[bool]) -> np.ndarray:
        """One llama_decode; returns the logits rows of the tokens with want[i]: [rows, vocab]."""
        b = self._batch
        b.n_tokens = len(ids)
        for i, (tok, p, ss, w) in enumerate(zip(ids, pos, seqs, want)):
            b.token[i] = tok
            b.pos[i] = p
            b.n_seq_id[i] = len(ss)
            for j, s in enumerate(ss):
                b.seq_id[i][j] = s
            b.logits[i] = w
        rc = self._lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise OutpaceError(f"llama_decode failed with code {rc} (KV memory full?)")
        rows = sum(want)
        ptr = self._lib.llama_get_logits(self._ctx)
        arr = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(rows, self.vocab_size))
        return arr.copy()


def _free(lib: Any, model: Any, ctx: Any, batch: Any) -> None:
    lib.llama_batch_free(batch)
    lib.llama_free(ctx)
    lib.llama_model_free(model)


def load(spec: str, *, n_ctx: int = 4096, threads: int | None = None, cache: Path | None = None) -> Any:
    """Load a packaged short name or a GGUF file into llama.cpp, with the model's own tokenizer
    read from the GGUF by transformers (saved once next to the converted models, so the torch
    and llama.cpp backends tokenize identically)."""
    from outpace import models
    from outpace.backends.torch import LoadedModel

    source = models.resolve(spec, cache=cache)
    if source.kind != "gguf":
        raise OutpaceError(f"the llama.cpp backend needs a GGUF model; {spec} is a {source.kind}")
    path = Path(source.path_or_id)
    backend = LlamaCppBackend(path, n_ctx=n_ctx, threads=threads, name=f"{source.name}@llama.cpp")
    tok = _tokenizer(path, cache or models.cache_dir())
    eos = set(backend.eog_ids())
    if tok.eos_token_id is not None:
        eos.add(tok.eos_token_id)
    return LoadedModel(backend, tok, backend.name, tuple(sorted(eos)))


def _tokenizer(gguf: Path, cache: Path) -> Any:
    from transformers import AutoTokenizer

    out = cache / "converted" / f"{gguf.stem}-{gguf.stat().st_size}-tokenizer"
    if (out / ".complete").exists():
        return AutoTokenizer.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(out)
    (out / ".complete").write_text(str(gguf))
    return tok


#: Weight formats `requantize` writes (llama.cpp file types). llama.cpp has repacked CPU kernels
#: for some of them (Q4_0, Q8_0 on AVX2/AVX-512), which change the cost of batched verification.
FORMATS = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
           "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def requantize(spec: str, fmt: str, *, threads: int | None = None, cache: Path | None = None) -> Path:
    """Write the GGUF of `spec` in another weight format once, into the cache, and return its
    path (pass it as the target). Requantizing a quantized file compounds rounding: the result
    is a different target model, to be compared with plain llama.cpp on the same file."""
    from outpace import models

    if fmt not in FORMATS:
        raise OutpaceError(f"unknown llama.cpp format {fmt!r}; known: {', '.join(FORMATS)}")
    source = models.resolve(spec, cache=cache)
    if source.kind != "gguf":
        raise OutpaceError(f"requantizing needs a GGUF model; {spec} is a {source.kind}")
    src = Path(source.path_or_id)
    out = (cache or models.cache_dir()) / "converted" / f"{src.stem}-{src.stat().st_size}-{fmt}.gguf"
    if out.exists():
        return out
    lib = _lib()
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, FORMATS[fmt])
    params.allow_requantize = True
    params.nthread = threads or os.cpu_count() or 1
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    if lib.llama_model_quantize(str(src).encode(), str(part).encode(), ctypes.byref(params)) != 0:
        part.unlink(missing_ok=True)
        raise OutpaceError(f"llama.cpp could not requantize {src} to {fmt}")
    part.replace(out)
    return out
