"""The torch backend: transformers models wrapped (never forked or patched).

This module owns all contact with transformers internals: loading (GGUF, HF directories, hub
ids), the DynamicCache layout used for rollback and compaction, and the custom 4-D attention mask
for token trees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from outpace.backends.base import Backend, Capabilities, ForwardOutput
from outpace.backends.quant import QuantConfig, quantize_model
from outpace.errors import OutpaceError
from outpace.hardware import resolve_dtype
from outpace.tree import ancestor_mask, depths

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchBackend:
    """A transformers causal LM behind the `Backend` protocol."""

    capabilities = Capabilities(trees=True, hidden_states=True, rollback=True)

    def __init__(self, model: Any, name: str = "model") -> None:
        from transformers import DynamicCache

        self._cache_cls = DynamicCache
        self.model = model.eval()
        self.name = name
        self.dtype: torch.dtype = next(model.parameters()).dtype
        self.vocab_size = int(model.get_output_embeddings().out_features)  # nn.Linear or quantized
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048))

    def new_cache(self) -> Any:
        # No config: every layer is a plain, croppable DynamicLayer (sliding-window layers could
        # not be rolled back); sliding-window masks are still applied by the model.
        return self._cache_cls()

    def cache_len(self, cache: Any) -> int:
        return int(cache.get_seq_length())

    @torch.inference_mode()
    def forward(
        self,
        cache: Any,
        tokens: torch.Tensor,  # [n] int64
        parents: torch.Tensor | None = None,  # [n] int64
        hidden_layers: Sequence[int] = (),
        last_only: bool = False,
    ) -> ForwardOutput:
        start = self.cache_len(cache)
        n = int(tokens.shape[0])
        if start + n > self.max_context:
            raise OutpaceError(
                f"context of {start + n} tokens exceeds {self.name}'s limit of {self.max_context}"
            )
        if parents is None:
            positions = torch.arange(start, start + n)
            mask = None
        else:
            positions = start + depths(parents) - 1
            mask = self._tree_mask(start, parents)
        out = self.model(
            input_ids=tokens.view(1, n),
            position_ids=positions.view(1, n),
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            output_hidden_states=bool(hidden_layers),
            logits_to_keep=1 if last_only else 0,
        )
        hidden = {i: out.hidden_states[i][0] for i in hidden_layers}
        return ForwardOutput(out.logits[0].float(), hidden)

    def _tree_mask(self, start: int, parents: torch.Tensor) -> torch.Tensor:
        """Additive mask [1, 1, n, start + n]: 0 where attention is allowed, dtype-min elsewhere."""
        n = parents.shape[0]
        allowed = torch.cat([torch.ones(n, start, dtype=torch.bool), ancestor_mask(parents)], dim=1)
        mask = torch.zeros(n, start + n, dtype=self.dtype)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        return mask.view(1, 1, n, start + n)

    def rollback(self, cache: Any, length: int) -> None:
        extra = self.cache_len(cache) - length
        if extra < 0:
            raise ValueError(f"cannot roll back a cache of {self.cache_len(cache)} to {length}")
        if extra:
            cache.crop(-extra)

    def keep(self, cache: Any, start: int, rows: Sequence[int]) -> None:
        rows = list(rows)
        if rows == list(range(len(rows))):
            self.rollback(cache, start + len(rows))
            return
        index = torch.tensor(rows, dtype=torch.long) + start
        for layer in _cache_layers(cache):
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys[..., index, :]], dim=-2)
            layer.values = torch.cat(
                [layer.values[..., :start, :], layer.values[..., index, :]], dim=-2
            )


def _cache_layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise OutpaceError("this transformers version's cache layout is not supported (need >= 5)")
    return [layer for layer in layers if getattr(layer, "is_initialized", True)]


# ---------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedModel:
    backend: Backend
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    name: str
    eos_ids: tuple[int, ...]  # ids that end a generation (tokenizer's and generation config's)


def set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads for torch (None: all cores)."""
    torch.set_num_threads(threads or os.cpu_count() or 1)


def load(
    spec: str, dtype: str = "auto", quant: str | None = None, *, cache: Path | None = None
) -> LoadedModel:
    """Load a packaged short name, a GGUF file, an HF directory or a hub id.

    GGUF weights are dequantized by transformers once and kept as safetensors in the cache
    (`<cache>/converted/`), so later loads take seconds instead of a minute. `quant` ('int8',
    'int4' or 'int4g64' style) swaps the linear layers for weight-only quantized ones, also
    cached on disk.
    """
    from outpace import models

    dtype = resolve_dtype(dtype)
    if dtype not in DTYPES:
        raise OutpaceError(f"dtype must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    qcfg = parse_quant(quant)
    source = models.resolve(spec, cache=cache)
    root = cache or models.cache_dir()
    if source.kind == "gguf":
        model_dir = _converted(Path(source.path_or_id), dtype, root)
        model, tok = _from_pretrained(str(model_dir), dtype)
    else:
        model_dir = None
        model, tok = _from_pretrained(source.path_or_id, dtype)
    name = source.name
    if qcfg is not None:
        # Cache the quantized tensors next to the converted weights; other sources quantize per run.
        qfile = None if model_dir is None else model_dir / f"{qcfg.tag}.safetensors"
        quantize_model(model, qcfg, qfile)
        name = f"{name}@{qcfg.tag}"
    return LoadedModel(TorchBackend(model, name), tok, name, _eos_ids(model, tok))


def parse_quant(quant: str | None) -> QuantConfig | None:
    """None/'none' -> None; 'int8'; 'int4' (group 128); 'int4g64' -> QuantConfig."""
    if quant in (None, "", "none"):
        return None
    assert quant is not None
    if quant.startswith("int4g") and quant[5:].isdigit():
        return QuantConfig("int4", int(quant[5:]))
    return QuantConfig(quant)


def _eos_ids(model: Any, tok: Any) -> tuple[int, ...]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return tuple(sorted(set(ids)))


def _from_pretrained(where: str, dtype: str, **kw: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(where, **kw)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=DTYPES[dtype], **kw)
    return model, tok


def _converted(gguf: Path, dtype: str, cache: Path) -> Path:
    """The safetensors copy of a GGUF file in `dtype`, made on first use."""
    stat = gguf.stat()
    out = cache / "converted" / f"{gguf.stem}-{stat.st_size}-{dtype}"
    done = out / ".complete"
    if done.exists():
        return out
    log.warning("converting %s to %s safetensors (once; cached in %s)", gguf.name, dtype, out)
    from safetensors.torch import save_model

    model, tok = _from_pretrained(str(gguf.parent), dtype, gguf_file=gguf.name)
    out.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses GGUF-loaded models; the weights are plain tensors by now, so
    # write them and a config without the GGUF quantization marker.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"))
    tok.save_pretrained(out)
    done.write_text(str(gguf))
    return out
