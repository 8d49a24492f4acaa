"""Building a decoder from user-facing names: `--target`, `--drafter`, `--dtype`.

Drafter specs: `none`, `prompt-lookup[:key=value,...]`, `draft-model:MODEL`. This is the one
place that maps those strings to objects, so the CLI, the benchmark and the server agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch

from outpace import models
from outpace.backends.torch import LoadedModel, load
from outpace.decoder import Decoder
from outpace.drafters import specs as model_free
from outpace.drafters.base import Drafter
from outpace.drafters.draft_model import DraftModelDrafter, check_same_tokenizer
from outpace.drafters.draft_tree import DRAFTER_ROWS as DRAFT_TREE_ROWS
from outpace.drafters.prompt_lookup import PromptLookupConfig, PromptLookupDrafter
from outpace.errors import OutpaceError
from outpace.hardware import resolve_dtype
from outpace.policies import cached_costs


@dataclass(frozen=True)
class EngineSpec:
    target: str
    drafter: str = "none"
    dtype: str = "auto"  # auto: bfloat16 where it is native (GPU, avx512_bf16/AMX), else float32
    quant: str | None = None  # weight-only quantization of the target: int8, int4, int4g64, ...
    cost_profile: bool = True  # measure (once, cached) the target's forward costs for --adaptive
    backend: str = "torch"  # "llama.cpp" (GGUF models; the file fixes the weights) or "auto"

    def __post_init__(self) -> None:
        if self.backend not in (*BACKENDS, "auto"):
            raise OutpaceError(f"backend must be auto or one of {BACKENDS}, got {self.backend!r}")
        if self.quant and self.backend == "llama.cpp":
            raise OutpaceError("--quant applies to the torch backend; for llama.cpp pick a GGUF file of another "
                               "format (outpace models quantize MODEL --format q4_0|q8_0)")


BACKENDS = ("torch", "llama.cpp")


def engine_label(backend: str, dtype: str, quant: str | None) -> str:
    """How the target runs, for messages: 'llama.cpp, ...' or 'torch, float32, int4'."""
    if backend == "llama.cpp":
        return "llama.cpp, the GGUF file's weights"
    return f"torch, {dtype}" + (f", {quant}" if quant else "")


def resolve_backend(backend: str, target: str, quant: str | None = None) -> str:
    """`auto` -> llama.cpp for a GGUF target when llama-cpp-python is installed, no GPU is
    present and no torch quantization is asked for (the fastest path on a CPU); else torch."""
    if backend != "auto":
        return backend
    if quant or torch.cuda.is_available() or models.resolve(target).kind != "gguf":
        return "torch"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "torch"
    return "llama.cpp"


@dataclass(frozen=True)
class Engine:
    decoder: Decoder
    target: LoadedModel
    drafter_name: str


def load_cached(spec: str, dtype: str, quant: str | None = None, backend: str = "torch") -> LoadedModel:
    """Load a model once per process (the benchmark and the server reuse it)."""
    return _load_once(spec, resolve_dtype(dtype), quant, backend)  # positional: one cache entry per model


@lru_cache(maxsize=4)
def _load_once(spec: str, dtype: str, quant: str | None, backend: str) -> LoadedModel:
    if backend == "llama.cpp":
        from outpace.backends import llama_cpp

        if quant:
            raise OutpaceError(f"quant={quant} applies to torch models; on the llama.cpp backend {spec} runs "
                               "the GGUF file's own weights (outpace models quantize makes other formats)")
        return llama_cpp.load(spec, threads=torch.get_num_threads())  # type: ignore[no-any-return]
    return load(spec, dtype, quant)


Loader = Callable[..., LoadedModel]  # (spec, dtype, quant=None) -> LoadedModel


def build(spec: EngineSpec, loader: Loader | None = None) -> Engine:
    """Load the target (and the drafter's models, on the same backend) and assemble a Decoder."""
    backend = resolve_backend(spec.backend, spec.target, spec.quant)
    if loader is None:
        loader = partial(load_cached, backend=backend)
    dtype = resolve_dtype(spec.dtype)
    target = loader(spec.target, dtype, spec.quant)
    drafter = make_drafter(spec.drafter, target, dtype, loader)
    costs = None
    if drafter is not None and spec.cost_profile:
        where = Path(spec.target).expanduser()
        ident = str(where.resolve()) if where.exists() else spec.target
        digest = hashlib.sha1(ident.encode()).hexdigest()[:10]
        key = f"{target.name}-{digest}-{dtype}-{spec.quant}-{torch.get_num_threads()}t-torch{torch.__version__}"
        costs = cached_costs(target.backend, models.cache_dir(), key.replace("/", "_"))
    decoder = Decoder(target.backend, target.tokenizer, drafter, eos_ids=target.eos_ids, costs=costs)
    return Engine(decoder, target, spec.drafter)


DrafterFactory = Callable[[str, LoadedModel, str, Loader], Drafter]


def _prompt_lookup(arg: str, target: LoadedModel, dtype: str, loader: Loader) -> Drafter:
    return PromptLookupDrafter(PromptLookupConfig(**parse_options(arg, PROMPT_LOOKUP_OPTIONS)))


def _draft_model(arg: str, target: LoadedModel, dtype: str, loader: Loader) -> Drafter:
    model, _, rest = arg.partition(",")
    if not model:
        raise OutpaceError("draft-model needs a model: --drafter draft-model:qwen2.5-coder-0.5b")
    opts = parse_options(rest, {"quant": str})
    draft = loader(model, dtype, opts.get("quant"))
    check_same_tokenizer(target.tokenizer, draft.tokenizer, target.name, draft.name)
    return DraftModelDrafter(draft.backend)


#: Drafter name -> factory(argument after ':', target, dtype, loader). New drafters add a row.
DRAFTERS: dict[str, tuple[DrafterFactory, str]] = {
    "prompt-lookup": (_prompt_lookup, "prompt-lookup[:max_ngram=3,min_ngram=1,branches=1]"),
    "draft-model": (_draft_model, "draft-model:MODEL[,quant=int8|int4]"),
    "recycling": (model_free.recycling, model_free.RECYCLING_USAGE),
    "aded": (model_free.aded, model_free.ADED_USAGE),
    "stand": (model_free.stand, model_free.STAND_USAGE),
    "rest": (model_free.rest, model_free.REST_USAGE),
    "rasd": (model_free.rasd, model_free.RASD_USAGE),
    "spectr": DRAFT_TREE_ROWS["spectr"],
    "rsd": DRAFT_TREE_ROWS["rsd"],
    "dyspec": DRAFT_TREE_ROWS["dyspec"],
}


def make_drafter(spec: str, target: LoadedModel, dtype: str, loader: Loader = load_cached) -> Drafter | None:
    """The drafter a spec names (`none` gives None: autoregressive decoding)."""
    kind, _, arg = spec.partition(":")
    if kind in ("none", "ar", ""):
        return None
    if kind not in DRAFTERS:
        usage = ", ".join(["none", *(u for _, u in DRAFTERS.values())])
        raise OutpaceError(f"unknown drafter {spec!r}; known: {usage}")
    return DRAFTERS[kind][0](arg, target, dtype, loader)


PROMPT_LOOKUP_OPTIONS = {"max_ngram": int, "min_ngram": int, "branches": int}


def parse_options(arg: str, known: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """`key=value,key=value` -> dict, each value converted by known[key]."""
    out: dict[str, Any] = {}
    for item in filter(None, arg.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in known:
            raise OutpaceError(f"bad drafter option {item!r}; expected key=value with key in {sorted(known)}")
        try:
            out[key] = known[key](value)
        except ValueError:
            raise OutpaceError(f"drafter option {key} needs a {known[key].__name__}, got {value!r}") from None
    return out
