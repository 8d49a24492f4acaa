"""`--drafter` specs of the model-free family: factories that `outpace.engine.DRAFTERS` lists.

Each factory takes (argument after ':', target, dtype, loader), like the engine's own, and
loads what it needs (a datastore file, a draft model) before touching the target, so a probe
with no target still checks the files and model names a spec mentions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from outpace.errors import OutpaceError

RECYCLING_USAGE = "recycling[:k=8,decay=0.5]"
ADED_USAGE = "aded[:DATASTORE|datastore=FILE,iterations=150,depth=4,paths=24,max_bigrams=65536]"
STAND_USAGE = "stand[:max_n=4,min_n=1,top_k=10,max_children=4,max_depth=8,share=prompt]"
REST_USAGE = "rest[:DATASTORE|datastore=FILE,max_span=16,min_span=2,length=10,limit=1024] (no datastore: the context)"
RASD_USAGE = ("rasd[:draft=MODEL,quant=int8|int4,datastore=FILE,draft_tokens=4,top_k=8] "
              "(defaults: qwen2.5-coder-0.5b for Qwen targets, retrieval from the context)")

#: The draft model RASD uses when none is named, by target name prefix.
DEFAULT_RASD_DRAFTS = {"qwen2.5": "qwen2.5-coder-0.5b"}


def options(arg: str, known: dict[str, Callable[[str], Any]], positional: str | None = None) -> dict[str, Any]:
    """`key=value,...` options; with `positional`, an argument without '=' is that option."""
    from outpace.engine import parse_options

    if positional and arg and "=" not in arg:
        return {positional: arg}
    return parse_options(arg, known)


def recycling(arg: str, target: Any, dtype: str, loader: Any) -> Any:
    from outpace.drafters.recycling import RecyclingConfig, RecyclingDrafter

    cfg = RecyclingConfig(**options(arg, {"k": int, "decay": float}))
    return RecyclingDrafter(target.backend.vocab_size, cfg)


def aded(arg: str, target: Any, dtype: str, loader: Any) -> Any:
    from outpace.drafters.aded import AdedConfig, AdedDrafter

    known: dict[str, Callable[[str], Any]] = {"datastore": str, "iterations": int, "depth": int, "paths": int,
                                              "max_bigrams": int,
                                              "successors": int, "window": int, "boost": float, "cap": float}
    opts = options(arg, known, positional="datastore")
    path = opts.pop("datastore", None)
    store = _datastore(path, target) if path else None
    return AdedDrafter(AdedConfig(**opts), corpus=None if store is None else store.tokens)


def stand(arg: str, target: Any, dtype: str, loader: Any) -> Any:
    from outpace.drafters.stand import StandConfig, StandDrafter

    known: dict[str, Callable[[str], Any]] = {"max_n": int, "min_n": int, "top_k": int, "max_children": int,
                                              "max_depth": int, "prior": float, "share": str}
    return StandDrafter(target.backend.vocab_size, StandConfig(**options(arg, known)))


_RETRIEVAL: dict[str, Callable[[str], Any]] = {"max_span": int, "min_span": int, "length": int, "limit": int}


def rest(arg: str, target: Any, dtype: str, loader: Any) -> Any:
    from outpace.drafters.rest import RestConfig, RestDrafter

    opts = options(arg, {"datastore": str, **_RETRIEVAL}, positional="datastore")
    path = opts.pop("datastore", None)
    cfg = RestConfig(**opts)
    return RestDrafter(_retriever(path, target, cfg.max_span), cfg)


def rasd(arg: str, target: Any, dtype: str, loader: Any) -> Any:
    from outpace.drafters.draft_model import check_same_tokenizer
    from outpace.drafters.rasd import RasdConfig, RasdDrafter
    from outpace.drafters.rest import RestConfig

    known: dict[str, Callable[[str], Any]] = {"draft": str, "quant": str, "datastore": str, "draft_tokens": int,
                                              "top_k": int, **_RETRIEVAL}
    opts = options(arg, known)
    path = opts.pop("datastore", None)
    explicit = opts.pop("draft", None)
    name = explicit or _default_draft(target)
    # On torch the packaged default draft runs int4 (3x cheaper): a draft's precision never
    # changes the output. On llama.cpp the GGUF's own weights run. An explicit draft runs as
    # given unless quant= says.
    from outpace.backends.torch import TorchBackend

    on_torch = isinstance(getattr(target, "backend", None), TorchBackend)
    quant = opts.pop("quant", None) or (None if explicit or not on_torch else "int4")
    retrieval = RestConfig(**{"min_span": 1, "limit": 256, **{k: opts.pop(k) for k in list(opts) if k in _RETRIEVAL}})
    cfg = RasdConfig(retrieval=retrieval, **opts)
    draft = loader(name, dtype, quant)
    retriever = _retriever(path, target, retrieval.max_span)
    check_same_tokenizer(target.tokenizer, draft.tokenizer, target.name, draft.name)
    return RasdDrafter(draft.backend, retriever, cfg)


def _default_draft(target: Any) -> str:
    if target is None:  # a probe without a target (bench's spec check): name the usual default
        return next(iter(DEFAULT_RASD_DRAFTS.values()))
    name = str(getattr(target, "name", ""))
    for prefix, draft in DEFAULT_RASD_DRAFTS.items():
        if name.startswith(prefix):
            return draft
    raise OutpaceError(
        f"rasd needs a draft model with {name or 'the target'}'s tokenizer: --drafter rasd:draft=MODEL "
        "(the default, qwen2.5-coder-0.5b, is only for Qwen2.5 targets)"
    )


def _datastore(path: str, target: Any) -> Any:
    from outpace.datastore import Datastore, check_compatible

    store = Datastore.load(path)
    if target is not None:
        check_compatible(store, target.tokenizer, target.backend.vocab_size, path, target.name)
    return store


def _retriever(path: str | None, target: Any, max_span: int) -> Any:
    from outpace.drafters.rest import ContextRetriever, DatastoreRetriever

    return DatastoreRetriever(_datastore(path, target)) if path else ContextRetriever(max_span)
